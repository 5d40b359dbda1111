/*
 * mam_journal.h — mod_mam's append-only journal: the durability point of
 * an archived message (see mod_mam.c, "The writer").
 *
 * One file per worker and host, DATADIR/mam-journal/HOST/W.log: a 16-byte
 * header ("XDMAMJ1\n" and the file's generation, a native uint64), then
 * framed records, each
 *
 *     uint32 length of the payload | uint32 crc32 (zlib) of the payload | payload
 *
 * payload: uint8 version (2), uint8 dir, int64 ts (µs), then host, username,
 * id, peer, resource, msgid, retract, body, xml, each a uint32 length
 * (UINT32_MAX for none) and the bytes and a NUL.  Version 1 (journals
 * written before) had a flags byte after the version, which nothing read:
 * it is still decoded (replay after an upgrade), never written.
 * Native byte order: the file is read back by the process that wrote it, on
 * the same machine.  A record whose frame is cut short or whose crc does
 * not match ends the file (a write that a kill interrupted: its sender was
 * never answered); the file is truncated there when opened.
 *
 * Appends to one file come from one worker's batches, one at a time; the
 * indexer reads what was appended (pread below `size`, which only grows
 * under the file's mutex) and, once that is committed in the database,
 * moves `consumed`; a file whose records are all consumed is replaced by an
 * empty one of the next generation (a new file renamed over it), so that a
 * consumed offset recorded for an older generation never applies to it.
 * Pure file work: no database, no loop.  Any thread (pool threads, the
 * main thread at start).
 */
#ifndef XMPPD_MOD_MAM_JOURNAL_H
#define XMPPD_MOD_MAM_JOURNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xmppd/owner.h"

#define MAM_JHDR 16u               /* header bytes */
#define MAM_REC_MAX (64u << 20)    /* a payload longer than this is not a record */

/* One record.  Encoded from the caller's strings; decoded, the strings
 * point into the buffer read (NUL-terminated there). */
typedef struct mam_rec {
    const char *host, *user, *id, *peer, *resource, *msgid, *retract, *body, *xml;
    int64_t ts;
    int dir;
} mam_rec_t;

/* Framed bytes of r. */
size_t mam_rec_size(const mam_rec_t *r);
/* Writes r's frame (mam_rec_size bytes) at out; returns its size. */
size_t mam_rec_encode(const mam_rec_t *r, unsigned char *out);
/* The record at p (avail bytes): 0 and *used its frame's bytes; 1 when the
 * bytes end inside it or it is damaged (crc, lengths): the end of the
 * valid records. */
int mam_rec_decode(unsigned char *p, size_t avail, mam_rec_t *r, size_t *used);

typedef struct mam_jfile {
    pthread_mutex_t mu;
    int fd;            /* -1: not open */
    unsigned worker;
    uint64_t gen;      /* the file's generation (its header) */
    uint64_t size;     /* bytes of complete appends */
    uint64_t consumed; /* bytes indexed (committed in the database) */
    uint64_t records;  /* records between consumed and size */
} mam_jfile_t;

typedef struct mam_journal {
    _Atomic unsigned nf; /* files that may exist: 1 + the highest worker seen */
    char dir[4096];    /* DATADIR/mam-journal/HOST */
    char node[40];     /* this data directory's id (mam-journal/node) */
    bool sync;         /* fdatasync after each append */
    mam_jfile_t f[XD_OWNER_MAX_WORKERS];
    _Atomic uint64_t pend_records, pend_bytes; /* not yet consumed, all files */
} mam_journal_t;

/* Prepares j for the journals under data_dir/mam-journal/host (creating
 * the directories, mode 0700, and the node id).  Opens the files already
 * there (their generations read, sizes checked, torn tails cut): their
 * consumed offsets are the caller's to set (mam_journal_set_consumed).
 * 0 or -errno / XD_EINTERNAL. */
int mam_journal_open(mam_journal_t *j, const char *data_dir, const char *host, bool sync);
/* Closes the files. */
void mam_journal_close(mam_journal_t *j);

/* Sets file f's consumed offset (from the database) when gen is its
 * generation and off within it; else the start.  Counts the records after
 * it into the backlog. */
void mam_journal_set_consumed(mam_journal_t *j, mam_jfile_t *f, uint64_t gen, uint64_t off);

/* Appends `bytes` bytes (n records, already framed) to worker w's file,
 * opening it first when needed, with one write (fdatasync after it when
 * j->sync).  0 or -errno; on a short write the file is cut back.  After a
 * write that succeeded, placed(arg, gen, at) is called with the file's
 * generation and the offset the bytes start at, under the file's mutex:
 * before any reader of the file can see them. */
int mam_journal_append(mam_journal_t *j, unsigned w, const unsigned char *buf, size_t bytes,
                       size_t n, void (*placed)(void *arg, uint64_t gen, uint64_t at),
                       void *arg);

/* After a commit of f's records up to `end` (n records): moves consumed;
 * an empty file is rotated.  0 or -errno (the rotation failed: appends go
 * on in the old file). */
int mam_journal_consumed(mam_journal_t *j, mam_jfile_t *f, uint64_t end, uint64_t n);

#endif

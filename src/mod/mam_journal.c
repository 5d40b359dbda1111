/*
 * mam_journal.c — mod_mam's append-only journal (see mam_journal.h).
 */
#include "mam_journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <openssl/rand.h>

#include "xmppd/alloc.h"
#include "xmppd/err.h"
#include "xmppd/log.h"

static const char mam_jmagic[8] = { 'X', 'D', 'M', 'A', 'M', 'J', '1', '\n' };

#define REC_VERSION 2
#define REC_FIXED (1 + 1 + 8)     /* version, dir, ts */
#define REC_FIXED_V1 (1 + 1 + 1 + 8) /* version, flags (unused), dir, ts */
#define REC_NSTR 9

static void
rec_strs(const mam_rec_t *r, const char *s[REC_NSTR])
{
    s[0] = r->host;
    s[1] = r->user;
    s[2] = r->id;
    s[3] = r->peer;
    s[4] = r->resource;
    s[5] = r->msgid;
    s[6] = r->retract;
    s[7] = r->body;
    s[8] = r->xml;
}

size_t
mam_rec_size(const mam_rec_t *r)
{
    const char *s[REC_NSTR];
    rec_strs(r, s);
    size_t n = 8 + REC_FIXED;
    for (int i = 0; i < REC_NSTR; i++)
        n += 4 + (s[i] ? strlen(s[i]) + 1 : 0);
    return n;
}

size_t
mam_rec_encode(const mam_rec_t *r, unsigned char *out)
{
    const char *s[REC_NSTR];
    rec_strs(r, s);
    unsigned char *p = out + 8;
    *p++ = REC_VERSION;
    *p++ = (unsigned char)r->dir;
    memcpy(p, &r->ts, 8);
    p += 8;
    for (int i = 0; i < REC_NSTR; i++) {
        uint32_t len = s[i] ? (uint32_t)strlen(s[i]) : UINT32_MAX;
        memcpy(p, &len, 4);
        p += 4;
        if (s[i]) {
            memcpy(p, s[i], len + 1);
            p += len + 1;
        }
    }
    uint32_t plen = (uint32_t)(p - out - 8);
    uint32_t crc = (uint32_t)crc32(0L, out + 8, plen);
    memcpy(out, &plen, 4);
    memcpy(out + 4, &crc, 4);
    return 8 + (size_t)plen;
}

int
mam_rec_decode(unsigned char *p, size_t avail, mam_rec_t *r, size_t *used)
{
    uint32_t plen, crc;
    if (avail < 8)
        return 1;
    memcpy(&plen, p, 4);
    memcpy(&crc, p + 4, 4);
    if (plen < REC_FIXED || plen > MAM_REC_MAX || plen > avail - 8)
        return 1;
    unsigned char *q = p + 8, *end = q + plen;
    if ((uint32_t)crc32(0L, q, plen) != crc || (q[0] != 1 && q[0] != REC_VERSION))
        return 1;
    size_t fixed = q[0] == 1 ? REC_FIXED_V1 : REC_FIXED;
    if (plen < fixed)
        return 1;
    *r = (mam_rec_t){ 0 };
    r->dir = q[fixed - 9];
    memcpy(&r->ts, q + fixed - 8, 8);
    q += fixed;
    const char **s[REC_NSTR] = { &r->host,     &r->user,    &r->id,   &r->peer, &r->resource,
                                 &r->msgid,    &r->retract, &r->body, &r->xml };
    for (int i = 0; i < REC_NSTR; i++) {
        uint32_t len;
        if (end - q < 4)
            return 1;
        memcpy(&len, q, 4);
        q += 4;
        if (len == UINT32_MAX)
            continue;
        if ((size_t)(end - q) < (size_t)len + 1 || q[len] != 0)
            return 1;
        *s[i] = (const char *)q;
        q += len + 1;
    }
    if (q != end || !r->host || !r->user || !r->id || !r->peer || !r->resource || !r->xml)
        return 1;
    *used = 8 + plen;
    return 0;
}

/* ---- files ------------------------------------------------------------------------------------- */

static int
mkdir_p(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        int rc = mkdir(path, 0700);
        *p = '/';
        if (rc != 0 && errno != EEXIST)
            return -errno;
    }
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static int
write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : XD_EINTERNAL;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The node id: a random name kept in data_dir/mam-journal/node. */
static int
node_id(const char *base, char out[40])
{
    char path[4200];
    snprintf(path, sizeof path, "%s/node", base);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, out, 32);
        close(fd);
        if (n == 32) {
            out[32] = 0;
            return 0;
        }
    }
    unsigned char rnd[16];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return XD_EINTERNAL;
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", rnd[i]);
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    int rc = write_all(fd, out, 32);
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    return rc;
}

static void
file_path(const mam_journal_t *j, unsigned w, const char *suffix, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%u.log%s", j->dir, w, suffix);
}

/* A new empty file of generation gen renamed over worker w's (fsynced, and
 * the directory with it, when j->sync).  Its descriptor or -errno. */
static int
file_create(mam_journal_t *j, unsigned w, uint64_t gen)
{
    char tmp[4200], path[4200];
    file_path(j, w, ".tmp", tmp, sizeof tmp);
    file_path(j, w, "", path, sizeof path);
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    unsigned char hdr[MAM_JHDR];
    memcpy(hdr, mam_jmagic, 8);
    memcpy(hdr + 8, &gen, 8);
    int rc = write_all(fd, hdr, sizeof hdr);
    if (rc == 0 && j->sync && fdatasync(fd) != 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc == 0 && j->sync) {
        int dfd = open(j->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    if (rc != 0) {
        close(fd);
        unlink(tmp);
        return rc;
    }
    return fd;
}

/* The valid end of f's records from `from` (their count into *n). */
static uint64_t
file_scan(int fd, uint64_t from, uint64_t size, uint64_t *n)
{
    *n = 0;
    size_t cap = 1u << 20;
    unsigned char *buf = xd_malloc(cap);
    uint64_t pos = from;
    size_t have = 0; /* bytes in buf, starting at pos */
    for (;;) {
        if (have < cap && pos + have < size) {
            ssize_t r = pread(fd, buf + have, cap - have, (off_t)(pos + have));
            if (r < 0 && errno == EINTR)
                continue;
            if (r > 0) {
                have += (size_t)r;
                continue;
            }
            size = pos + have; /* shorter than it said */
        }
        size_t off = 0, used;
        mam_rec_t rec;
        while (off < have && mam_rec_decode(buf + off, have - off, &rec, &used) == 0) {
            off += used;
            (*n)++;
        }
        pos += off;
        memmove(buf, buf + off, have - off);
        have -= off;
        if (off == 0) { /* no complete record in the buffer */
            uint32_t plen = 0;
            if (have >= 8)
                memcpy(&plen, buf, 4);
            if (have < 8 || pos + have >= size || plen > MAM_REC_MAX || 8 + (size_t)plen <= have)
                break; /* the end, or a damaged record */
            if (8 + (size_t)plen > cap) {
                cap = 8 + (size_t)plen;
                buf = xd_realloc(buf, cap);
            }
        }
    }
    xd_free(buf);
    return pos;
}

int
mam_journal_open(mam_journal_t *j, const char *data_dir, const char *host, bool sync)
{
    j->sync = sync;
    atomic_store(&j->nf, 0);
    atomic_store(&j->pend_records, 0);
    atomic_store(&j->pend_bytes, 0);
    for (unsigned w = 0; w < XD_OWNER_MAX_WORKERS; w++) {
        pthread_mutex_init(&j->f[w].mu, NULL);
        j->f[w].fd = -1;
        j->f[w].worker = w;
    }
    char base[3072];
    if (snprintf(base, sizeof base, "%s/mam-journal", data_dir) >= (int)sizeof base ||
        snprintf(j->dir, sizeof j->dir, "%s/%s", base, host) >= (int)sizeof j->dir)
        return -ENAMETOOLONG;
    int rc = mkdir_p(j->dir);
    if (rc == 0)
        rc = node_id(base, j->node);
    if (rc != 0)
        return rc;
    DIR *d = opendir(j->dir);
    if (!d)
        return -errno;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        unsigned long w = strtoul(e->d_name, &end, 10);
        if (end == e->d_name || strcmp(end, ".log") != 0 || w >= XD_OWNER_MAX_WORKERS)
            continue;
        mam_jfile_t *f = &j->f[w];
        char path[4200];
        file_path(j, (unsigned)w, "", path, sizeof path);
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
            continue;
        unsigned char hdr[MAM_JHDR];
        struct stat sb;
        if (fstat(fd, &sb) != 0 || pread(fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr ||
            memcmp(hdr, mam_jmagic, 8) != 0) {
            XD_LOG(NULL, XD_ERROR, "archive journal unreadable: set aside", "file=%s", path);
            close(fd);
            char bad[4300];
            snprintf(bad, sizeof bad, "%s.bad", path);
            rename(path, bad);
            continue;
        }
        f->fd = fd;
        if (atomic_load(&j->nf) <= w)
            atomic_store(&j->nf, (unsigned)w + 1);
        memcpy(&f->gen, hdr + 8, 8);
        f->size = (uint64_t)sb.st_size;
        f->consumed = MAM_JHDR;
    }
    closedir(d);
    return 0;
}

void
mam_journal_close(mam_journal_t *j)
{
    for (unsigned w = 0; w < XD_OWNER_MAX_WORKERS; w++) { /* every mutex was initialised */
        if (j->f[w].fd >= 0)
            close(j->f[w].fd);
        j->f[w].fd = -1;
        pthread_mutex_destroy(&j->f[w].mu);
    }
}

void
mam_journal_set_consumed(mam_journal_t *j, mam_jfile_t *f, uint64_t gen, uint64_t off)
{
    pthread_mutex_lock(&f->mu);
    f->consumed = gen == f->gen && off >= MAM_JHDR && off <= f->size ? off : MAM_JHDR;
    uint64_t n;
    uint64_t end = file_scan(f->fd, f->consumed, f->size, &n);
    if (end < f->size) {
        XD_LOG(NULL, XD_WARN, "archive journal: a cut or damaged record ends it",
               "dir=%s worker=%u at=%llu size=%llu", j->dir, f->worker, (unsigned long long)end,
               (unsigned long long)f->size);
        if (ftruncate(f->fd, (off_t)end) == 0)
            f->size = end;
    }
    f->records = n;
    atomic_fetch_add(&j->pend_records, n);
    atomic_fetch_add(&j->pend_bytes, end - f->consumed);
    pthread_mutex_unlock(&f->mu);
}

int
mam_journal_append(mam_journal_t *j, unsigned w, const unsigned char *buf, size_t bytes, size_t n,
                   void (*placed)(void *arg, uint64_t gen, uint64_t at), void *arg)
{
    w %= XD_OWNER_MAX_WORKERS;
    mam_jfile_t *f = &j->f[w];
    pthread_mutex_lock(&f->mu);
    /* Readers loop over nf files: raised before the file can hold records. */
    unsigned nf = atomic_load(&j->nf);
    while (nf <= w && !atomic_compare_exchange_weak(&j->nf, &nf, w + 1))
        ;
    int rc = 0;
    if (f->fd < 0) {
        /* A new file: a generation no earlier file of this worker had
         * (the clock's µs), so no recorded offset applies to it. */
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        uint64_t gen = (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u;
        if (gen <= f->gen)
            gen = f->gen + 1;
        int fd = file_create(j, f->worker, gen);
        if (fd < 0) {
            rc = fd;
        } else {
            f->fd = fd;
            f->gen = gen;
            f->size = f->consumed = MAM_JHDR;
            f->records = 0;
        }
    }
    if (rc == 0) {
        ssize_t wr;
        do
            wr = pwrite(f->fd, buf, bytes, (off_t)f->size);
        while (wr < 0 && errno == EINTR);
        if (wr != (ssize_t)bytes) {
            rc = wr < 0 ? -errno : -ENOSPC;
            if (ftruncate(f->fd, (off_t)f->size) != 0) { /* what a later append would follow */
                close(f->fd);
                f->fd = -1;
            }
        } else if (j->sync && fdatasync(f->fd) != 0) {
            rc = -errno; /* the bytes are there; their durability is not known */
            if (ftruncate(f->fd, (off_t)f->size) != 0) {
                close(f->fd);
                f->fd = -1;
            }
        }
    }
    if (rc == 0) {
        if (placed)
            placed(arg, f->gen, f->size);
        f->size += bytes;
        f->records += n;
        atomic_fetch_add(&j->pend_records, n);
        atomic_fetch_add(&j->pend_bytes, bytes);
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

int
mam_journal_consumed(mam_journal_t *j, mam_jfile_t *f, uint64_t end, uint64_t n)
{
    pthread_mutex_lock(&f->mu);
    uint64_t bytes = end > f->consumed ? end - f->consumed : 0;
    f->consumed = end;
    f->records -= n <= f->records ? n : f->records;
    atomic_fetch_sub(&j->pend_records, n);
    atomic_fetch_sub(&j->pend_bytes, bytes);
    int rc = 0;
    if (f->fd >= 0 && f->consumed == f->size && f->size > MAM_JHDR) {
        int fd = file_create(j, f->worker, f->gen + 1);
        if (fd < 0) {
            rc = fd;
        } else {
            close(f->fd);
            f->fd = fd;
            f->gen++;
            f->size = f->consumed = MAM_JHDR;
            f->records = 0;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

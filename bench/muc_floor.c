/*
 * muc_floor — a stand-in "server" for the shared load driver's group-chat
 * mode (xmppload -m muc) that does nothing but the fan-out: the floor any
 * server meets on this machine with this driver, to set beside xmppd's
 * figures (docs/performance.md).
 *
 * It answers just enough XMPP for xmppload: a stream with PLAIN (any
 * password), bind, IQ results, a room join answered with the self-presence
 * (status 110), and for every groupchat message a copy to each joined
 * connection (the sender's included, as a room reflects).  The copies are
 * sent by -w threads (a server's workers), each for its share of the
 * connections, with io_uring submissions of up to -b sends (or one send()
 * each with -s).  No routing, no session table, no XML tree: each copy is
 * formatted from the message's id and body.  Single room, plain TCP on
 * 127.0.0.1 only.
 *
 *   muc_floor -p PORT [-w 2] [-b 256] [-s] [-d xd.test]
 *
 * SIGTERM or SIGINT: prints the copies sent and the sending threads' CPU
 * per copy, and exits.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXCONN 20000
#define JOBS 1024 /* fan-outs in flight (a ring) */
#define COPY 512  /* bytes per formatted copy */

typedef struct conn {
    int fd;
    int depth, in_tag, quote;
    size_t tag_start, st_start, scan;
    char *buf;
    size_t len, cap;
    char nick[64];
} conn_t;

typedef struct job {
    char id[64];
    char nick[64];
    char body[256];
} job_t;

static int nw = 2, chunk = 256, plain = 0;
static const char *domain = "xd.test";
static conn_t *conns[MAXCONN];
static int joined[MAXCONN];
static _Atomic int njoined;
static job_t jobs[JOBS];
static _Atomic uint64_t njobs;
static _Atomic uint64_t done[64];
static int wake[64];
static _Atomic uint64_t copies;
static _Atomic int stop;
static double sender_cpu[64];

static double
thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
out(conn_t *c, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN) {
                usleep(100); /* the handshake's few bytes: rare */
                continue;
            }
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

static void
outs(conn_t *c, const char *s)
{
    out(c, s, strlen(s));
}

/* The value of attribute `name` in the start tag at st (n bytes), or "". */
static void
attr(const char *st, size_t n, const char *name, char *v, size_t vn)
{
    v[0] = '\0';
    size_t nl = strlen(name);
    const char *end = memchr(st, '>', n);
    if (!end)
        end = st + n;
    for (const char *p = st + 1; p + nl + 2 < end; p++) {
        if ((p[-1] == ' ') && !memcmp(p, name, nl) && p[nl] == '=' &&
            (p[nl + 1] == '\'' || p[nl + 1] == '"')) {
            char q = p[nl + 1];
            const char *s = p + nl + 2, *e = memchr(s, q, (size_t)(end - s));
            if (!e)
                return;
            size_t l = (size_t)(e - s) < vn - 1 ? (size_t)(e - s) : vn - 1;
            memcpy(v, s, l);
            v[l] = '\0';
            return;
        }
    }
}

static void
send_header(conn_t *c, int authed)
{
    char h[512];
    snprintf(h, sizeof h,
             "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
             "xmlns:stream='http://etherx.jabber.org/streams' from='%s' id='x' version='1.0'>"
             "<stream:features>%s</stream:features>",
             domain,
             authed ? "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                    : "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                      "<mechanism>PLAIN</mechanism></mechanisms>");
    outs(c, h);
}

static void
stanza(conn_t *c, int idx, const char *st, size_t n)
{
    char id[64], ty[32], to[256], r[1024];
    attr(st, n, "id", id, sizeof id);
    attr(st, n, "type", ty, sizeof ty);
    if (!strncmp(st, "<auth", 5)) {
        outs(c, "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        c->depth = 0; /* the client restarts its stream */
        c->nick[0] = 1;  /* authenticated */
    } else if (!strncmp(st, "<iq", 3)) {
        if (!strcmp(id, "bind1"))
            snprintf(r, sizeof r,
                     "<iq type='result' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                     "<jid>u%d@%s/bench</jid></bind></iq>",
                     idx, domain);
        else
            snprintf(r, sizeof r, "<iq type='result' id='%s'/>", id);
        outs(c, r);
    } else if (!strncmp(st, "<presence", 9)) {
        attr(st, n, "to", to, sizeof to);
        char *slash = strchr(to, '/');
        if (!slash || atomic_load(&njoined) >= MAXCONN)
            return;
        snprintf(c->nick, sizeof c->nick, "%s", slash + 1);
        snprintf(r, sizeof r,
                 "<presence from='%s'><x xmlns='http://jabber.org/protocol/muc#user'>"
                 "<item affiliation='none' role='participant'/><status code='110'/></x></presence>",
                 to);
        outs(c, r);
        int k = atomic_load(&njoined);
        joined[k] = idx;
        atomic_store_explicit(&njoined, k + 1, memory_order_release);
    } else if (!strncmp(st, "<message", 8) && !strcmp(ty, "groupchat")) {
        const char *b = memmem(st, n, "<body>", 6), *e;
        if (!b || !(e = memmem(b, (size_t)(st + n - b), "</body>", 7)))
            return;
        b += 6;
        uint64_t k = atomic_load(&njobs);
        for (int w = 0; w < nw; w++)
            while (k - atomic_load(&done[w]) >= JOBS - 1)
                usleep(50); /* the slowest sender is a ring behind */
        job_t *j = &jobs[k % JOBS];
        snprintf(j->id, sizeof j->id, "%s", id);
        snprintf(j->nick, sizeof j->nick, "%s", c->nick);
        size_t bl = (size_t)(e - b) < sizeof j->body - 1 ? (size_t)(e - b) : sizeof j->body - 1;
        memcpy(j->body, b, bl);
        j->body[bl] = '\0';
        atomic_store_explicit(&njobs, k + 1, memory_order_release);
        uint64_t one = 1;
        for (int w = 0; w < nw; w++)
            if (write(wake[w], &one, sizeof one) < 0)
                perror("eventfd");
    }
}

/* Splits the input into depth-1 elements (quote-aware; no CDATA or
 * comments from this client). */
static void
input(conn_t *c, int idx)
{
    size_t i = c->scan;
    while (i < c->len) {
        char *d = c->buf;
        if (!c->in_tag) {
            char *p = memchr(d + i, '<', c->len - i);
            if (!p) {
                i = c->len;
                break;
            }
            i = (size_t)(p - d);
            c->in_tag = 1;
            c->tag_start = i++;
            continue;
        }
        char ch = d[i];
        if (c->quote) {
            if (ch == c->quote)
                c->quote = 0;
            i++;
            continue;
        }
        if (ch == '\'' || ch == '"') {
            c->quote = ch;
            i++;
            continue;
        }
        if (ch != '>') {
            i++;
            continue;
        }
        c->in_tag = 0;
        char k = d[c->tag_start + 1];
        i++;
        if (k == '?' || k == '!')
            continue;
        if (k == '/') {
            if (--c->depth == 1) {
                c->scan = i;
                stanza(c, idx, d + c->st_start, i - c->st_start);
                i = c->scan;
            } else if (c->depth <= 0) {
                outs(c, "</stream:stream>");
                shutdown(c->fd, SHUT_WR);
                c->depth = 0;
            }
            continue;
        }
        if (c->depth == 0) {
            c->depth = 1;
            send_header(c, c->nick[0] == 1);
            continue;
        }
        if (c->depth == 1)
            c->st_start = c->tag_start;
        if (d[i - 2] == '/') {
            if (c->depth == 1) {
                c->scan = i;
                int before = c->depth;
                stanza(c, idx, d + c->st_start, i - c->st_start);
                if (c->depth != before) { /* a stream restart: what follows is new */
                    c->len = c->scan = 0;
                    return;
                }
                i = c->scan;
            }
        } else {
            c->depth++;
        }
    }
    c->scan = i;
    size_t keep = c->depth > 1 ? c->st_start : c->scan;
    if (c->in_tag && c->tag_start < keep)
        keep = c->tag_start;
    if (keep > 0) {
        memmove(c->buf, c->buf + keep, c->len - keep);
        c->len -= keep;
        c->scan -= keep;
        if (c->depth > 1)
            c->st_start -= keep;
        if (c->in_tag)
            c->tag_start -= keep;
    }
}

static void *
sender(void *arg)
{
    int id = (int)(intptr_t)arg;
    struct io_uring ring;
    if (!plain && io_uring_queue_init(256, &ring, 0) != 0) {
        perror("io_uring_queue_init");
        exit(1);
    }
    char(*msg)[COPY] = calloc(MAXCONN, COPY);
    struct iovec *iov = calloc(MAXCONN, sizeof *iov);
    struct msghdr *mh = calloc(MAXCONN, sizeof *mh);
    int *fds = calloc(MAXCONN, sizeof *fds);
    double cpu0 = thread_cpu_s();
    uint64_t mine = 0;
    while (!atomic_load(&stop)) {
        uint64_t v;
        if (read(wake[id], &v, sizeof v) != sizeof v)
            break;
        uint64_t have = atomic_load_explicit(&njobs, memory_order_acquire);
        for (uint64_t k = atomic_load(&done[id]); k < have; k++) {
            job_t *j = &jobs[k % JOBS];
            int nj = atomic_load_explicit(&njoined, memory_order_acquire), n = 0;
            for (int x = id; x < nj; x += nw) {
                conn_t *c = conns[joined[x]];
                int l = snprintf(msg[n], COPY,
                                 "<message to='u%d@%s/bench' type='groupchat' id='%s' "
                                 "from='bench@conference.%s/%s'><body>%s</body></message>",
                                 joined[x], domain, j->id, domain, j->nick, j->body);
                if (plain) {
                    if (send(c->fd, msg[n], (size_t)l, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 &&
                        errno != EPIPE && errno != ECONNRESET)
                        perror("send");
                    mine++;
                    continue;
                }
                iov[n] = (struct iovec){ msg[n], (size_t)l };
                mh[n] = (struct msghdr){ .msg_iov = &iov[n], .msg_iovlen = 1 };
                fds[n++] = c->fd;
                if (n == chunk || x + nw >= nj) {
                    for (int q = 0; q < n; q++) {
                        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
                        io_uring_prep_sendmsg(sqe, fds[q], &mh[q], MSG_DONTWAIT | MSG_NOSIGNAL);
                    }
                    io_uring_submit(&ring);
                    for (int q = 0; q < n; q++) {
                        struct io_uring_cqe *cqe;
                        io_uring_wait_cqe(&ring, &cqe);
                        io_uring_cqe_seen(&ring, cqe);
                    }
                    mine += (uint64_t)n;
                    n = 0;
                }
            }
            atomic_store(&done[id], k + 1);
        }
    }
    sender_cpu[id] = thread_cpu_s() - cpu0;
    atomic_fetch_add(&copies, mine);
    return NULL;
}

static void
on_sig(int s)
{
    (void)s;
    atomic_store(&stop, 1);
}

int
main(int argc, char **argv)
{
    int port = 0, o;
    while ((o = getopt(argc, argv, "p:w:b:sd:")) != -1) {
        switch (o) {
        case 'p': port = atoi(optarg); break;
        case 'w': nw = atoi(optarg); break;
        case 'b': chunk = atoi(optarg); break;
        case 's': plain = 1; break;
        case 'd': domain = optarg; break;
        default: fprintf(stderr, "see the comment at the top\n"); return 2;
        }
    }
    if (port <= 0 || nw < 1 || nw > 64 || chunk < 1 || chunk > 256) {
        fprintf(stderr, "usage: muc_floor -p PORT [-w 1..64] [-b 1..256] [-s] [-d DOMAIN]\n");
        return 2;
    }
    struct rlimit rl = { MAXCONN + 64, MAXCONN + 64 };
    setrlimit(RLIMIT_NOFILE, &rl);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = { .sa_handler = on_sig };
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1024)) {
        perror("listen");
        return 1;
    }
    pthread_t th[64];
    for (int w = 0; w < nw; w++) {
        wake[w] = eventfd(0, 0);
        pthread_create(&th[w], NULL, sender, (void *)(intptr_t)w);
    }
    int ep = epoll_create1(0), nconn = 0;
    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = UINT32_MAX };
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event evs[256];
    while (!atomic_load(&stop)) {
        int ne = epoll_wait(ep, evs, 256, 200);
        for (int e = 0; e < ne; e++) {
            uint32_t u = evs[e].data.u32;
            if (u == UINT32_MAX) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (nconn >= MAXCONN) {
                        close(fd);
                        continue;
                    }
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conn_t *c = calloc(1, sizeof *c);
                    c->fd = fd;
                    c->cap = 4096;
                    c->buf = malloc(c->cap);
                    conns[nconn] = c;
                    struct epoll_event cev = { .events = EPOLLIN, .data.u32 = (uint32_t)nconn++ };
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            conn_t *c = conns[u];
            for (;;) {
                if (c->cap - c->len < 2048) {
                    c->cap *= 2;
                    c->buf = realloc(c->buf, c->cap);
                }
                ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
                if (r <= 0) {
                    if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                        /* closed: out of the poll set; the descriptor stays
                         * open (a sender may hold it) until exit */
                        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                        shutdown(c->fd, SHUT_RDWR);
                    }
                    break;
                }
                c->len += (size_t)r;
                input(c, (int)u);
            }
        }
    }
    uint64_t v = 1;
    for (int w = 0; w < nw; w++) {
        if (write(wake[w], &v, sizeof v) < 0)
            perror("eventfd");
        pthread_join(th[w], NULL);
    }
    double cpu = 0;
    for (int w = 0; w < nw; w++)
        cpu += sender_cpu[w];
    uint64_t n = atomic_load(&copies);
    printf("muc_floor senders=%d %s chunk=%d connections=%d joined=%d fanouts=%llu copies=%llu "
           "sender_us_per_copy=%.2f\n",
           nw, plain ? "send" : "io_uring", chunk, nconn, atomic_load(&njoined),
           (unsigned long long)atomic_load(&njobs), (unsigned long long)n,
           n ? cpu * 1e6 / (double)n : 0.0);
    return 0;
}

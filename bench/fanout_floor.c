/*
 * fanout_floor — what a group-chat fan-out costs on this machine without
 * any XMPP: the floor under xmppd's "20 msg/s x 1,000 occupants" p99.
 *
 * N loopback TCP connections.  A reader thread plays the load driver
 * (xmppload's loop: level-triggered epoll, up to 512 events a wait, 1 ms
 * timeout, recv until EAGAIN, the time stamp parsed from each message); a
 * trigger every 1/rate s starts a fan-out: W writer threads (the server's
 * workers) each send their share of the N copies (~350 bytes, the time of
 * the trigger inside), either one send() per copy or io_uring submissions
 * of up to -b sends, after -u ns of busy work per copy (the server's user
 * space cost: routing, session lookup, serialization).  The reader prints
 * the latency percentiles of every copy from trigger to read, and both
 * sides' CPU per copy.
 *
 *   fanout_floor [-n 1000] [-r 20] [-t 10] [-w 2] [-u 0] [-b 1024] [-s] [-p]
 *     -s  plain send() per copy instead of io_uring
 *     -p  writers pinned to CPU 0, the reader to CPU 1
 *
 * Nothing here is xmppd's code; it measures the kernel and the scheduler.
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

static int n = 1000, rate = 20, secs = 10, nw = 2, batch = 1024, plain = 0, pin = 0;
static long user_ns = 0;
static int *srv_fd, *cli_fd;
static int wake_fd[64];
static _Atomic uint64_t trigger_ts;
static _Atomic int stop;
static uint64_t *lat;
static size_t nlat, caplat;

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double
thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
spin(long ns)
{
    if (ns <= 0)
        return;
    uint64_t end = now_ns() + (uint64_t)ns;
    while (now_ns() < end)
        ;
}

static _Atomic double writer_cpu;

static void
pin_to(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *
writer(void *arg)
{
    int id = (int)(intptr_t)arg;
    if (pin)
        pin_to(0);
    struct io_uring ring;
    if (!plain && io_uring_queue_init(256, &ring, 0) != 0) {
        perror("io_uring_queue_init");
        exit(1);
    }
    char (*msg)[400] = calloc((size_t)n, sizeof *msg);
    size_t *len = calloc((size_t)n, sizeof *len);
    struct iovec *iov = calloc((size_t)n, sizeof *iov);
    struct msghdr *mh = calloc((size_t)n, sizeof *mh);
    double cpu0 = thread_cpu_s();
    for (;;) {
        uint64_t v;
        if (read(wake_fd[id], &v, sizeof v) != sizeof v || atomic_load(&stop))
            break;
        uint64_t ts = atomic_load(&trigger_ts);
        int lo = n * id / nw, hi = n * (id + 1) / nw, pend = 0, first = lo;
        for (int i = lo; i < hi; i++) {
            spin(user_ns);
            len[i] = (size_t)snprintf(msg[i], sizeof msg[i],
                                      "<message from='bench@conference.xd.test/user1' "
                                      "to='user%d@xd.test/bench' type='groupchat' id='g1'>"
                                      "<body>0:1:%llu</body><stanza-id xmlns='urn:xmpp:sid:0' "
                                      "id='0123456789abcdef' by='bench@conference.xd.test'/>"
                                      "</message>",
                                      i, (unsigned long long)ts);
            if (plain) {
                if (send(srv_fd[i], msg[i], len[i], MSG_DONTWAIT) != (ssize_t)len[i])
                    perror("send");
                continue;
            }
            iov[i] = (struct iovec){ msg[i], len[i] };
            mh[i] = (struct msghdr){ .msg_iov = &iov[i], .msg_iovlen = 1 };
            pend++;
            if (pend == batch || i == hi - 1 || pend == 256) {
                for (int k = first; k <= i; k++) {
                    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
                    io_uring_prep_sendmsg(sqe, srv_fd[k], &mh[k], MSG_DONTWAIT | MSG_NOSIGNAL);
                }
                io_uring_submit(&ring);
                for (int k = first; k <= i; k++) {
                    struct io_uring_cqe *cqe;
                    io_uring_wait_cqe(&ring, &cqe);
                    io_uring_cqe_seen(&ring, cqe);
                }
                pend = 0;
                first = i + 1;
            }
        }
    }
    atomic_store(&writer_cpu, atomic_load(&writer_cpu) + thread_cpu_s() - cpu0);
    return NULL;
}

static int
cmp64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
    int o;
    while ((o = getopt(argc, argv, "n:r:t:w:u:b:sp")) != -1) {
        switch (o) {
        case 'n': n = atoi(optarg); break;
        case 'r': rate = atoi(optarg); break;
        case 't': secs = atoi(optarg); break;
        case 'w': nw = atoi(optarg); break;
        case 'u': user_ns = atol(optarg); break;
        case 'b': batch = atoi(optarg); break;
        case 's': plain = 1; break;
        case 'p': pin = 1; break;
        default: fprintf(stderr, "see the comment at the top\n"); return 2;
        }
    }
    if (nw < 1 || nw > 64 || n < 1 || rate < 1) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    struct rlimit rl = { 4096 + 2 * (rlim_t)n, 4096 + 2 * (rlim_t)n };
    setrlimit(RLIMIT_NOFILE, &rl);
    srv_fd = calloc((size_t)n, sizeof *srv_fd);
    cli_fd = calloc((size_t)n, sizeof *cli_fd);
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1024) ||
        getsockname(ls, (struct sockaddr *)&a, &al)) {
        perror("listen");
        return 1;
    }
    int one = 1;
    for (int i = 0; i < n; i++) {
        cli_fd[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (connect(cli_fd[i], (struct sockaddr *)&a, sizeof a) && errno != EINPROGRESS) {
            perror("connect");
            return 1;
        }
        srv_fd[i] = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
        if (srv_fd[i] < 0) {
            perror("accept");
            return 1;
        }
        setsockopt(srv_fd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    pthread_t th[64];
    for (int w = 0; w < nw; w++) {
        wake_fd[w] = eventfd(0, 0);
        pthread_create(&th[w], NULL, writer, (void *)(intptr_t)w);
    }
    if (pin)
        pin_to(1);
    int ep = epoll_create1(0);
    for (int i = 0; i < n; i++) {
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
        epoll_ctl(ep, EPOLL_CTL_ADD, cli_fd[i], &ev);
    }
    char buf[16384];
    struct epoll_event evs[512];
    uint64_t period = 1000000000ull / (uint64_t)rate, t0 = now_ns(), next = t0 + period;
    uint64_t warm = t0 + 2000000000ull, end = warm + (uint64_t)secs * 1000000000u;
    double rcpu0 = 0;
    uint64_t triggers = 0;
    for (;;) {
        uint64_t t = now_ns();
        if (t >= end)
            break;
        if (t >= warm && rcpu0 == 0)
            rcpu0 = thread_cpu_s();
        if (t >= next) {
            next += period;
            atomic_store(&trigger_ts, t);
            triggers++;
            uint64_t one64 = 1;
            for (int w = 0; w < nw; w++)
                if (write(wake_fd[w], &one64, sizeof one64) != sizeof one64)
                    perror("eventfd");
        }
        int ne = epoll_wait(ep, evs, 512, 1);
        for (int e = 0; e < ne; e++) {
            int fd = cli_fd[evs[e].data.u32];
            for (;;) {
                ssize_t r = recv(fd, buf, sizeof buf - 1, 0);
                if (r <= 0)
                    break;
                buf[r] = 0;
                uint64_t tr = now_ns();
                for (char *p = buf; (p = strstr(p, "<body>0:1:")) != NULL; p += 10) {
                    uint64_t ts = strtoull(p + 10, NULL, 10);
                    if (ts < warm)
                        continue;
                    if (nlat == caplat) {
                        caplat = caplat ? caplat * 2 : 1 << 16;
                        lat = realloc(lat, caplat * sizeof *lat);
                    }
                    lat[nlat++] = (tr - ts) / 1000;
                }
            }
        }
    }
    double rcpu = thread_cpu_s() - rcpu0;
    atomic_store(&stop, 1);
    uint64_t one64 = 1;
    for (int w = 0; w < nw; w++) {
        if (write(wake_fd[w], &one64, sizeof one64) < 0)
            perror("eventfd");
        pthread_join(th[w], NULL);
    }
    qsort(lat, nlat, sizeof *lat, cmp64);
    if (!nlat) {
        fprintf(stderr, "nothing measured\n");
        return 1;
    }
    double wcpu = atomic_load(&writer_cpu);
    printf("floor n=%d rate=%d writers=%d%s user_ns=%ld %s batch=%d copies=%zu "
           "p50_us=%llu p90_us=%llu p99_us=%llu max_us=%llu reader_us_per_copy=%.2f "
           "writers_us_per_copy=%.2f\n",
           n, rate, nw, pin ? " pinned" : "", user_ns, plain ? "send" : "io_uring", batch, nlat,
           (unsigned long long)lat[nlat / 2], (unsigned long long)lat[nlat * 9 / 10],
           (unsigned long long)lat[nlat * 99 / 100], (unsigned long long)lat[nlat - 1],
           rcpu * 1e6 / (double)nlat, wcpu * 1e6 / (double)(triggers * (uint64_t)n));
    return 0;
}

/*
 * xmppctl.c — the administration tool (DESIGN.md 6).
 *
 * xmppctl talks to a running xmppd over its control socket, a Unix socket
 * (mode 0600) at `ctl_socket` (default <data_dir>/xmppd.sock).  The wire
 * protocol is deliberately plain so that it can be driven from a shell:
 *
 *   request:   command \t arg1 \t arg2 ... \n        (args may not contain \t or \n)
 *   response:  "ok\n" or "error <exit-code>\n", then the output, then EOF
 *
 * Exit codes: 0 success, 1 the command failed (or the socket may not be used:
 * permission denied), 2 usage error, 3 the server is not running (no socket,
 * or nobody accepts on it).
 *
 * Layers (docs/design.md): ctl uses core only.  With -c it loads the file
 * with core's loader for `ctl_socket`; the RFC 7622 preparation of the names
 * in it is the xmpp layer's and matters only to the server, so xmppctl takes
 * them as written (ctl_names).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "xd_version.h"
#include "xmppd/alloc.h"
#include "xmppd/config.h"

#define CTL_EXIT_FAIL 1
#define CTL_EXIT_USAGE 2
#define CTL_EXIT_DOWN 3

/* A name of the file as written: xmppctl reads ctl_socket and serves no names. */
static int
ctl_name(xd_str_t in, char **out)
{
    *out = xd_strndup(in.p, in.len);
    return 0;
}

static const xd_conf_names_t ctl_names = {
    .domain = ctl_name,
    .user = ctl_name,
    .local = ctl_name,
    .resource = ctl_name,
    .jid = ctl_name,
};

static void
ctl_usage(FILE *out)
{
    fprintf(out,
            "Usage: xmppctl [-c FILE | -s SOCKET] COMMAND [ARG...]\n"
            "\n"
            "Administer a running xmppd through its control socket.\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE    read ctl_socket from xmppd's configuration file\n"
            "  -s, --socket PATH    control socket (default ./var/xmppd.sock)\n"
            "  -h, --help           this text\n"
            "      --version        print the version\n"
            "\n"
            "Run `xmppctl help` for the commands the server offers.\n"
            "Exit status: 0 ok, 1 command failed (or permission denied on the socket),\n"
            "2 usage error, 3 server not running.\n");
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' },
        { "socket", required_argument, NULL, 's' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    const char *config_path = NULL;
    const char *sock_path = NULL;
    int c;

    while ((c = getopt_long(argc, argv, "+c:s:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': config_path = optarg; break;
        case 's': sock_path = optarg; break;
        case 'h': ctl_usage(stdout); return 0;
        case 'V': printf("xmppctl %s\n", XD_VERSION); return 0;
        default: ctl_usage(stderr); return CTL_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        ctl_usage(stderr);
        return CTL_EXIT_USAGE;
    }

    char *owned_path = NULL;
    if (!sock_path && config_path) {
        xd_config_t *cfg = NULL;
        char *err = NULL;
        if (xd_config_load_with(&ctl_names, config_path, &cfg, &err) != 0) {
            fprintf(stderr, "xmppctl: %s\n", err ? err : "cannot load configuration");
            free(err);
            return CTL_EXIT_USAGE;
        }
        owned_path = strdup(xd_config_ctl_socket(cfg));
        sock_path = owned_path;
        xd_config_unref(cfg);
    }
    if (!sock_path)
        sock_path = "./var/xmppd.sock";

    /* Build the request line; refuse arguments that would break framing. */
    size_t cap = 2, len = 0;
    for (int i = optind; i < argc; i++)
        cap += strlen(argv[i]) + 1;
    char *req = malloc(cap);
    if (!req)
        return CTL_EXIT_FAIL;
    for (int i = optind; i < argc; i++) {
        if (strpbrk(argv[i], "\t\n")) {
            fprintf(stderr, "xmppctl: arguments may not contain tabs or newlines\n");
            free(req);
            free(owned_path);
            return CTL_EXIT_USAGE;
        }
        size_t n = strlen(argv[i]);
        memcpy(req + len, argv[i], n);
        len += n;
        req[len++] = i + 1 < argc ? '\t' : '\n';
    }

    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(sock_path) >= sizeof sa.sun_path) {
        fprintf(stderr, "xmppctl: socket path too long: %s\n", sock_path);
        free(req);
        free(owned_path);
        return CTL_EXIT_USAGE;
    }
    strcpy(sa.sun_path, sock_path);
    free(owned_path); /* sa holds the path now */
    owned_path = NULL;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        free(req);
        if (e == EACCES || e == EPERM) {
            /* The socket is mode 0600 in a private data_dir: the server runs, but
             * for another user. */
            fprintf(stderr, "xmppctl: permission denied on %s: run as the xmppd user or root\n",
                    sa.sun_path);
            return CTL_EXIT_FAIL;
        }
        if (e == ENOENT || e == ECONNREFUSED) {
            fprintf(stderr, "xmppctl: cannot connect to %s: %s (is xmppd running?)\n",
                    sa.sun_path, strerror(e));
            return CTL_EXIT_DOWN;
        }
        fprintf(stderr, "xmppctl: cannot connect to %s: %s\n", sa.sun_path, strerror(e));
        return CTL_EXIT_FAIL;
    }
    for (size_t off = 0; off < len;) {
        ssize_t n = write(fd, req + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fprintf(stderr, "xmppctl: write: %s\n", strerror(errno));
            free(req);
            return CTL_EXIT_DOWN;
        }
        off += (size_t)n;
    }
    free(req);

    /* Read the status line, then copy the rest to stdout/stderr. */
    char buf[8192];
    size_t have = 0;
    int status = -1;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof buf - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;
        if (status < 0) {
            char *nl = memchr(buf, '\n', have);
            if (!nl) {
                if (have == sizeof buf)
                    break;
                continue;
            }
            *nl = '\0';
            if (strcmp(buf, "ok") == 0)
                status = 0;
            else if (strncmp(buf, "error ", 6) == 0)
                status = atoi(buf + 6) ? atoi(buf + 6) : CTL_EXIT_FAIL;
            else
                status = CTL_EXIT_FAIL;
            size_t rest = have - (size_t)(nl + 1 - buf);
            fwrite(nl + 1, 1, rest, status == 0 ? stdout : stderr);
            have = 0;
            continue;
        }
        fwrite(buf, 1, have, status == 0 ? stdout : stderr);
        have = 0;
    }
    close(fd);
    if (status < 0) {
        fprintf(stderr, "xmppctl: the server closed the connection without an answer\n");
        return CTL_EXIT_FAIL;
    }
    return status;
}

/*
 * bench_http.c — the HTTP request parser xmppd uses (libhttp-parser,
 * docs/design.md "HTTP"): requests parsed per second for a browser's
 * WebSocket upgrade and a BOSH POST, with the callbacks src/http/http.c
 * sets (headers copied out), and the parser's size per connection.
 * Figures in docs/performance.md.
 */
#include <http_parser.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const char upgrade_req[] =
    "GET /ws HTTP/1.1\r\nHost: chat.example.org\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; "
    "rv:109.0) Gecko/20100101 Firefox/115.0\r\nAccept: */*\r\nAccept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br\r\nSec-WebSocket-Version: 13\r\n"
    "Origin: https://chat.example.org\r\nSec-WebSocket-Protocol: xmpp\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Connection: keep-alive, Upgrade\r\nPragma: no-cache\r\nCache-Control: no-cache\r\n"
    "Upgrade: websocket\r\n\r\n";

static const char bosh_req[] =
    "POST /bosh HTTP/1.1\r\nHost: chat.example.org\r\nUser-Agent: Mozilla/5.0\r\n"
    "Content-Type: text/xml; charset=utf-8\r\nOrigin: https://chat.example.org\r\n"
    "Content-Length: 120\r\nConnection: keep-alive\r\n\r\n"
    "<body rid='1573741820' sid='SomeSID' xmlns='http://jabber.org/protocol/httpbind'>"
    "<presence xmlns='jabber:client'/></body>    ";

static char sink[4096];
static size_t sink_len;

static int
copy(http_parser *p, const char *at, size_t n)
{
    (void)p;
    if (sink_len + n > sizeof sink)
        sink_len = 0;
    memcpy(sink + sink_len, at, n);
    sink_len += n;
    return 0;
}

static int
done(http_parser *p)
{
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_url = copy,
    .on_header_field = copy,
    .on_header_value = copy,
    .on_body = copy,
    .on_message_complete = done,
};

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
run(const char *name, const char *req)
{
    size_t len = strlen(req);
    const int n = 1000000;
    double t0 = now();
    for (int i = 0; i < n; i++) {
        http_parser p;
        http_parser_init(&p, HTTP_REQUEST);
        sink_len = 0;
        size_t used = http_parser_execute(&p, &settings, req, len);
        if (used == 0 || (HTTP_PARSER_ERRNO(&p) != HPE_OK && HTTP_PARSER_ERRNO(&p) != HPE_PAUSED)) {
            fprintf(stderr, "parse error: %s\n", http_errno_name(HTTP_PARSER_ERRNO(&p)));
            return;
        }
    }
    double dt = now() - t0;
    printf("%-22s %6zu bytes  %9.0f requests/s  %7.1f MB/s\n", name, len, n / dt,
           (double)n * (double)len / dt / 1e6);
}

int
main(void)
{
    printf("libhttp-parser %lu.%lu.%lu, parser state %zu bytes per connection\n",
           (http_parser_version() >> 16) & 255, (http_parser_version() >> 8) & 255,
           http_parser_version() & 255, sizeof(http_parser));
    run("websocket upgrade", upgrade_req);
    run("bosh post", bosh_req);
    return 0;
}

"""The HTTP listener (`module: http`, src/http/http.c) through the wire:
routing to registered handlers, HEAD/OPTIONS/CORS, keep-alive, the limits
(header size 431, body size 413, request rate 429, header timeout against
slow clients) and the request-handler API of xmppd/http.h as BOSH and
upload use it (tests/modules/mod_httptest.c: collected, streamed and held
requests, piecewise responses)."""
import os
import re
import shutil
import socket
import subprocess
import time

import pytest

from conftest import build_dir
from xmpptest import free_port
from wstest import connect, http_request, read_response


def web(server_factory, http_opts="", extra_yaml="", module=True):
    """An xmppd with a c2s listener and an http listener (srv.http_port)."""
    port = free_port()
    c2s = free_port()
    listen = (f"  - port: {c2s}\n    ip: 127.0.0.1\n    module: c2s\n"
              f"  - port: {port}\n    ip: 127.0.0.1\n    module: http\n{http_opts}")
    if module:
        extra_yaml += (f"module_dir: {os.path.join(build_dir(), 'tests', 'modules')}\n"
                       "modules:\n  mod_httptest: {}\n")
    srv = server_factory(listen=listen, extra_yaml=extra_yaml)
    srv.http_port = port
    srv.c2s_port = c2s
    return srv


def get(port, path, headers="", method="GET", body=b""):
    raw = (f"{method} {path} HTTP/1.1\r\nHost: localhost:{port}\r\n{headers}"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    status, hdrs, data, s = http_request(port, raw)
    s.close()
    return status, hdrs, data


def wait_log(srv, pattern, timeout=5):
    """The log line matching pattern (the server logs a request right after
    answering it, so the line may follow the response by a moment)."""
    deadline = time.time() + timeout
    while True:
        m = re.search(pattern, srv.log_text(), re.M)
        if m or time.time() > deadline:
            assert m, srv.log_text()[-800:]
            return m
        time.sleep(0.05)


def read_head(s):
    """The status line of one response head (an interim 100 or a final
    response) without its headers' end; the bytes after the head stay on
    the socket for read_response."""
    buf = getattr(s, "_rest", b"")
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        assert d, f"connection closed before a response: {buf!r}"
        buf += d
    head, s._rest = buf.split(b"\r\n\r\n", 1)
    return head.split(b"\r\n")[0]


def closed_by_server(s, timeout=10):
    """Reads until EOF; returns what came (fails when the server keeps it open)."""
    s.settimeout(timeout)
    out = b""
    while True:
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            return out
        if not d:
            return out
        out += d


def test_host_meta_xml_and_json(server_factory):
    srv = web(server_factory, module=False)
    st, h, body = get(srv.http_port, "/.well-known/host-meta")
    assert st == 200 and h["content-type"].startswith("application/xrd+xml")
    assert (f"<Link rel='urn:xmpp:alt-connections:websocket' "
            f"href='ws://localhost:{srv.http_port}/ws'/>").encode() in body
    st, h, body = get(srv.http_port, "/.well-known/host-meta.json")
    assert st == 200 and h["content-type"] == "application/json"
    import json
    links = json.loads(body)["links"]
    assert {"rel": "urn:xmpp:alt-connections:websocket",
            "href": f"ws://localhost:{srv.http_port}/ws"} in links
    # Behind a TLS-terminating proxy the URL says wss.
    st, h, body = get(srv.http_port, "/.well-known/host-meta.json",
                      "X-Forwarded-Proto: https\r\n")
    assert b'"href":"wss://localhost:' in body


def test_host_meta_names_the_configured_path(server_factory):
    srv = web(server_factory, module=False, http_opts=(
        "    request_handlers:\n      /xmpp-websocket: websocket\n"
        "      /.well-known/host-meta: host_meta\n"))
    st, h, body = get(srv.http_port, "/.well-known/host-meta")
    assert st == 200
    assert f"href='ws://localhost:{srv.http_port}/xmpp-websocket'".encode() in body
    # Paths the listener does not name are not served, defaults included.
    assert get(srv.http_port, "/ws")[0] == 404
    assert get(srv.http_port, "/.well-known/host-meta.json")[0] == 404


def test_bad_host_header_is_400(server_factory):
    srv = web(server_factory, module=False)
    st, _, _, s = http_request(srv.http_port,
                               b"GET /.well-known/host-meta HTTP/1.1\r\nHost: a'b\r\n\r\n")
    assert st == 400


def test_unknown_path_404_and_method_405(server_factory):
    srv = web(server_factory)
    st, h, body = get(srv.http_port, "/nothing/here")
    assert st == 404 and b"404" in body
    # /test/echow is not under /test/echo
    assert get(srv.http_port, "/test/echow")[0] == 404
    st, h, body = get(srv.http_port, "/.well-known/host-meta", method="POST", body=b"x")
    assert st == 405
    assert h["allow"] == "GET, HEAD"


def test_head_has_headers_but_no_body(server_factory):
    srv = web(server_factory)
    s = connect(srv.http_port)
    # HEAD, then GET on the same connection: a body after HEAD would be
    # read as the start of the second response.
    s.sendall(b"HEAD /test/big?1000 HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /test/echo HTTP/1.1\r\nHost: x\r\n\r\n")
    buf = b""
    while buf.count(b"HTTP/1.1 ") < 2 or not buf.endswith(b"echo"):
        d = s.recv(65536)
        assert d, buf
        buf += d
    first, second = buf.split(b"HTTP/1.1 ", 2)[1:]
    assert first.startswith(b"200") and b"Content-Length: 1000\r\n" in first
    assert first.endswith(b"\r\n\r\n")  # no body
    assert second.startswith(b"200") and second.endswith(b"\r\n\r\necho")
    s.close()


def test_options_preflight_and_cors(server_factory):
    srv = web(server_factory)
    st, h, body = get(srv.http_port, "/test/echo", method="OPTIONS",
                      headers="Origin: https://app.example\r\n"
                              "Access-Control-Request-Method: POST\r\n"
                              "Access-Control-Request-Headers: Content-Type\r\n")
    assert st == 204
    assert h["access-control-allow-origin"] == "*"
    assert "POST" in h["access-control-allow-methods"]
    assert h["access-control-allow-headers"] == "Content-Type"
    assert "OPTIONS" in h["allow"]
    # A simple request from a page gets the header too; one without Origin not.
    st, h, _ = get(srv.http_port, "/test/echo", "Origin: https://app.example\r\n")
    assert st == 200 and h["access-control-allow-origin"] == "*"
    st, h, _ = get(srv.http_port, "/test/echo")
    assert "access-control-allow-origin" not in h
    # OPTIONS * answers for the server
    st, h, _ = get(srv.http_port, "*", method="OPTIONS")
    assert st == 204


def test_cors_allow_list(server_factory):
    srv = web(server_factory, http_opts="    cors_origins: [https://good.example]\n")
    st, h, _ = get(srv.http_port, "/test/echo", "Origin: https://good.example\r\n")
    assert h["access-control-allow-origin"] == "https://good.example"
    assert h["vary"] == "Origin"
    st, h, _ = get(srv.http_port, "/test/echo", "Origin: https://evil.example\r\n")
    assert st == 200 and "access-control-allow-origin" not in h


def test_keep_alive_and_pipelining(server_factory):
    srv = web(server_factory)
    s = connect(srv.http_port)
    for i in range(3):
        body = f"ping{i}".encode()
        s.sendall(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n" + body)
        st, h, data = read_response(s)
        assert st == 200 and data == body and h["connection"] == "keep-alive"
    # Pipelined: three requests in one write, three answers in order.
    s.sendall(b"".join(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n"
                       + bytes([65 + i]) for i in range(3)))
    got = [read_response(s)[2] for _ in range(3)]
    assert got == [b"A", b"B", b"C"]
    # Connection: close is honoured.
    s.sendall(b"GET /test/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    rest = closed_by_server(s)
    assert b"Connection: close" in rest and rest.endswith(b"echo")
    s.close()


def test_oversized_header_431(server_factory):
    srv = web(server_factory, http_opts="    max_header_size: 2KB\n")
    s = connect(srv.http_port)
    s.sendall(b"GET /test/echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n")
    out = closed_by_server(s)
    assert out.startswith(b"HTTP/1.1 431 "), out
    # Just under the limit passes.
    st, _, _ = get(srv.http_port, "/test/echo", "X-Big: " + "a" * 1500 + "\r\n")
    assert st == 200


def test_too_many_header_lines_431(server_factory):
    srv = web(server_factory, http_opts="    max_header_size: 64KB\n")
    s = connect(srv.http_port)
    s.sendall(b"GET /test/echo HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150))
              + b"\r\n")
    assert closed_by_server(s).startswith(b"HTTP/1.1 431 ")


def test_oversized_body_413(server_factory):
    srv = web(server_factory, http_opts="    max_body_size: 10KB\n")
    # Announced: refused before the body is read, and the connection closes.
    s = connect(srv.http_port)
    s.sendall(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n")
    out = closed_by_server(s)
    assert out.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in out
    # Chunked, without a length: refused when it passes the limit.
    s = connect(srv.http_port)
    s.sendall(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              + b"1000\r\n" + b"a" * 4096 + b"\r\n"
              + b"1000\r\n" + b"a" * 4096 + b"\r\n"
              + b"1000\r\n" + b"a" * 4096 + b"\r\n")
    assert closed_by_server(s).startswith(b"HTTP/1.1 413 ")
    # At the limit passes.
    st, _, data = get(srv.http_port, "/test/echo", method="POST", body=b"z" * 10240)
    assert st == 200 and len(data) == 10240


def test_header_timeout_closes_slow_client(server_factory):
    srv = web(server_factory, http_opts="    header_timeout: 1s\n")
    s = connect(srv.http_port)
    start = time.time()
    s.sendall(b"GET /test/echo HTTP/1.1\r\nHost: x\r\n")
    # Trickling header bytes does not extend the time (slowloris).
    s.settimeout(0.3)
    closed = False
    for _ in range(20):
        try:
            s.sendall(b"X-a: b\r\n")
            d = s.recv(100)
            if not d:
                closed = True
                break
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
    assert closed, "the server kept a slow client past header_timeout"
    assert time.time() - start < 4
    assert re.search(r'event="stream error sent" conn=\d+ ip=127\.0\.0\.1 cond=connection-timeout',
                     srv.log_text())


def test_idle_keep_alive_connection_closes(server_factory):
    srv = web(server_factory, http_opts="    header_timeout: 1s\n")
    s = connect(srv.http_port)
    s.sendall(b"GET /test/echo HTTP/1.1\r\nHost: x\r\n\r\n")
    st, _, _ = read_response(s)
    assert st == 200
    start = time.time()
    assert closed_by_server(s, timeout=5) == b""
    assert time.time() - start < 4


def test_request_rate_429(server_factory):
    srv = web(server_factory, http_opts="    request_rate: 5\n")
    s = connect(srv.http_port)
    s.sendall(b"GET /test/echo HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
    out = closed_by_server(s)
    assert out.count(b"HTTP/1.1 200 ") == 5
    assert b"HTTP/1.1 429 " in out


def test_bad_request_400(server_factory):
    srv = web(server_factory)
    s = connect(srv.http_port)
    s.sendall(b"GET /test/echo HTTP/1.1\r\nHost x no colon\r\n\r\n")
    assert closed_by_server(s).startswith(b"HTTP/1.1 400 ")
    s = connect(srv.http_port)
    s.sendall(b"GET http://elsewhere/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert closed_by_server(s).startswith(b"HTTP/1.1 400 ")


def test_access_log(server_factory):
    srv = web(server_factory)
    get(srv.http_port, "/test/echo", "User-Agent: probe/1.0\r\n")
    wait_log(srv, r'event="http request" conn=\d+ ip=127\.0\.0\.1 method=GET '
                  r'path="/test/echo" status=200 bytes=4 ms=\d+ ua="probe/1\.0"$')


def test_held_request_answered_later(server_factory):
    srv = web(server_factory)
    s = connect(srv.http_port)
    # The second request waits for the first's answer (one at a time).
    s.sendall(b"GET /test/hold HTTP/1.1\r\nHost: x\r\n\r\nGET /test/echo HTTP/1.1\r\nHost: x\r\n\r\n")
    st, _, data = read_response(s)
    assert st == 200 and data == b"held"
    st, _, data = read_response(s)
    assert st == 200 and data == b"echo"
    s.close()


def test_held_request_client_leaves(server_factory):
    srv = web(server_factory)
    s = connect(srv.http_port)
    s.sendall(b"GET /test/hold HTTP/1.1\r\nHost: x\r\n\r\n")
    s.close()
    # The late answer finds nobody and the server goes on.
    time.sleep(0.3)
    assert get(srv.http_port, "/test/echo")[0] == 200


def test_streamed_upload_100mb(server_factory):
    """A 100 MB PUT streams through the handler, paused and resumed, while
    the server's memory stays far below the body's size."""
    srv = web(server_factory)
    rss0 = srv.rss_kib()
    size = 100 * 1024 * 1024
    s = connect(srv.http_port, 30)
    s.sendall(f"PUT /test/stream HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode())
    chunk = b"u" * (1 << 20)
    for _ in range(100):
        s.sendall(chunk)
    st, _, data = read_response(s)
    assert st == 200 and data == f"received {size}".encode()
    assert srv.rss_kib() - rss0 < 40 * 1024, (rss0, srv.rss_kib())


def test_streamed_handler_refuses_early(server_factory):
    srv = web(server_factory)
    s = connect(srv.http_port)
    s.sendall(b"PUT /test/stream HTTP/1.1\r\nHost: x\r\nContent-Length: 300000000\r\n\r\n"
              + b"x" * 1000)
    assert closed_by_server(s).startswith(b"HTTP/1.1 413 ")


def test_piecewise_response(server_factory):
    srv = web(server_factory)
    n = 20 * 1024 * 1024 + 7
    s = connect(srv.http_port, 30)
    s.sendall(f"GET /test/big?{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    st, h, data = read_response(s)
    assert st == 200 and int(h["content-length"]) == n and len(data) == n
    assert data.count(b"x") == n
    # keep-alive after a piecewise response
    s.sendall(b"GET /test/echo HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(s)[2] == b"echo"


def test_access_log_value_cannot_break_the_line(server_factory):
    srv = web(server_factory)
    s = connect(srv.http_port)
    s.sendall(b'GET /nothing"x=1\\y HTTP/1.1\r\nHost: x\r\nUser-Agent: a"b\\c\r\n'
              b'Connection: close\r\n\r\n')
    out = closed_by_server(s)
    assert out.startswith(b"HTTP/1.1 ")
    wait_log(srv, r'event="http request" conn=\d+ ip=127\.0\.0\.1 method=GET '
                  r'path="/nothing_x=1_y" status=\d+ bytes=\d+ ms=\d+ ua="a_b_c"$')


def test_expect_100_continue(server_factory):
    """RFC 9110 10.1.1: a client that sends Expect: 100-continue waits for
    100 Continue before it sends the body; a refusal comes instead, at once."""
    srv = web(server_factory, http_opts="    max_body_size: 10KB\n")
    exp = "Expect: 100-continue\r\n"
    # A collected body: 100 before a byte of it is sent, then the answer.
    s = connect(srv.http_port, 5)
    s.sendall(f"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n{exp}\r\n".encode())
    assert read_head(s) == b"HTTP/1.1 100 Continue"
    s.sendall(b"hello")
    st, h, data = read_response(s)
    assert st == 200 and data == b"hello" and h["connection"] == "keep-alive"
    # A streamed body, on the same connection: the handler took the headers.
    s.sendall(f"PUT /test/stream HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n{exp}\r\n".encode())
    assert read_head(s) == b"HTTP/1.1 100 Continue"
    s.sendall(b"abc")
    assert read_response(s)[:3:2] == (200, b"received 3")
    # A body the client sends without waiting is fine as well.
    s.sendall(f"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n{exp}\r\nok".encode())
    st, _, data = read_response(s)
    assert (st, data) in ((100, b""), (200, b"ok"))
    if st == 100:
        assert read_response(s)[2] == b"ok"
    s.close()
    # Refusals come instead of the 100, without the body, and the connection closes:
    # over max_body_size, over the streamed handler's own limit, no handler, no method.
    for req, status in ((b"POST /test/echo HTTP/1.1\r\nContent-Length: 20000\r\n", b"413"),
                        (b"PUT /test/stream HTTP/1.1\r\nContent-Length: 300000000\r\n", b"413"),
                        (b"POST /nothing HTTP/1.1\r\nContent-Length: 5\r\n", b"404"),
                        (b"DELETE /test/echo HTTP/1.1\r\nContent-Length: 5\r\n", b"405")):
        s = connect(srv.http_port, 5)
        s.sendall(req + b"Host: x\r\n" + exp.encode() + b"\r\n")
        out = closed_by_server(s, timeout=5)
        assert out.startswith(b"HTTP/1.1 " + status + b" "), (req, out)
        assert b"Connection: close" in out and b" 100 " not in out
    # An expectation the server does not know: 417.
    s = connect(srv.http_port, 5)
    s.sendall(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
              b"Expect: 200-ok\r\n\r\n")
    assert closed_by_server(s, timeout=5).startswith(b"HTTP/1.1 417 ")
    # HTTP/1.0 knows no 100 (RFC 9110 10.1.1): the expectation is ignored.
    s = connect(srv.http_port, 5)
    s.sendall(f"POST /test/echo HTTP/1.0\r\nHost: x\r\nContent-Length: 2\r\n{exp}\r\nhi"
              .encode())
    out = closed_by_server(s, timeout=5)
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"hi"), out


def test_expect_100_continue_with_curl(server_factory, tmp_path):
    """curl sends Expect: 100-continue for a large PUT and waits for the 100
    (here up to 10 s) before it sends the body."""
    curl = shutil.which("curl")
    if not curl:
        pytest.skip("curl is not installed")
    srv = web(server_factory)
    f = tmp_path / "body"
    f.write_bytes(b"c" * 3_000_000)
    start = time.time()
    r = subprocess.run([curl, "-sS", "-v", "--expect100-timeout", "10", "-H",
                        "Expect: 100-continue", "-T", str(f), "-o", "-",
                        f"http://127.0.0.1:{srv.http_port}/test/stream"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"received 3000000"
    assert b"< HTTP/1.1 100 Continue" in r.stderr, r.stderr[-2000:]
    assert time.time() - start < 8


def test_ambiguous_requests_are_400(server_factory):
    """Requests that a proxy in front and xmppd could read differently
    (request smuggling, RFC 9112 3.2, 5.1, 6.1, 6.3) or whose length cannot
    be trusted: 400, and the connection closes before anything after them
    is read as a request."""
    srv = web(server_factory)
    after = b"GET /test/echo HTTP/1.1\r\nHost: x\r\n\r\n"
    for raw in (
            # Content-Length and Transfer-Encoding together
            b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            # two different lengths
            b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            # a length that is no number, or overflows
            b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
            b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            # a chunk size that overflows
            b"POST /test/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"fffffffffffffffffffff\r\nab\r\n",
            # a transfer coding other than chunked last: no way to find the end
            b"POST /test/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nab",
            # white space between a field name and its colon
            b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length : 2\r\n\r\nab",
            # HTTP/1.1 without Host, or with two
            b"GET /test/echo HTTP/1.1\r\n\r\n",
            b"GET /test/echo HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
    ):
        s = connect(srv.http_port, 5)
        s.sendall(raw + after)
        out = closed_by_server(s, timeout=5)
        assert out.startswith(b"HTTP/1.1 400 "), (raw, out)
        assert out.count(b"HTTP/1.1 ") == 1, (raw, out)
    # HTTP/1.0 needs no Host.
    s = connect(srv.http_port, 5)
    s.sendall(b"GET /test/echo HTTP/1.0\r\n\r\n")
    assert closed_by_server(s, timeout=5).startswith(b"HTTP/1.1 200 ")


def test_chunked_body_limits(server_factory):
    """A chunked body is held to max_body_size as it comes, trailers to the
    header limits, and a chunked body within the limit is collected."""
    srv = web(server_factory, http_opts="    max_body_size: 10KB\n    max_header_size: 4KB\n")
    s = connect(srv.http_port, 5)
    s.sendall(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    st, _, data = read_response(s)
    assert st == 200 and data == b"abcde"
    # one chunk announcing more than the limit: refused before it is read
    s = connect(srv.http_port, 5)
    s.sendall(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"100000\r\n" + b"a" * 100)
    assert closed_by_server(s, timeout=5).startswith(b"HTTP/1.1 413 ")
    # many small chunks passing it
    s = connect(srv.http_port, 5)
    s.sendall(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              + b"1\r\na\r\n" * 10241)
    assert closed_by_server(s, timeout=5).startswith(b"HTTP/1.1 413 ")
    # trailers count against the header limits
    s = connect(srv.http_port, 5)
    s.sendall(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"1\r\na\r\n0\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"t" * 50) for i in range(200))
              + b"\r\n")
    assert closed_by_server(s, timeout=5).startswith(b"HTTP/1.1 431 ")


def test_bytes_after_an_upgrade(server_factory):
    """The bytes after a WebSocket upgrade request, in the same write, are
    the stream's first frame; after a refused upgrade they are never read
    as HTTP."""
    import base64
    import struct
    srv = web(server_factory)
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade = (f"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n").encode()
    payload = b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>"
    mask = os.urandom(4)
    frame = (struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask
             + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    s = connect(srv.http_port, 5)
    s.sendall(upgrade + frame)
    assert read_head(s).startswith(b"HTTP/1.1 101 ")
    buf = s._rest
    while b"<open " not in buf:
        d = s.recv(65536)
        assert d, buf
        buf += d
    s.close()
    # A refused upgrade (no handler there): 404, and what follows is not HTTP.
    s = connect(srv.http_port, 5)
    s.sendall(upgrade.replace(b"/ws", b"/nothing") + b"GET /test/echo HTTP/1.1\r\nHost: x\r\n\r\n")
    out = closed_by_server(s, timeout=5)
    assert out.startswith(b"HTTP/1.1 404 ") and out.count(b"HTTP/1.1 ") == 1, out
    # An upgrade the WebSocket handler refuses (no xmpp protocol): the same.
    s = connect(srv.http_port, 5)
    s.sendall(upgrade.replace(b"Sec-WebSocket-Protocol: xmpp\r\n", b"")
              + b"GET /test/echo HTTP/1.1\r\nHost: x\r\n\r\n")
    out = closed_by_server(s, timeout=5)
    assert out.startswith(b"HTTP/1.1 400 ") and out.count(b"HTTP/1.1 ") == 1, out


@pytest.mark.parametrize("when", ["pipelined", "after_hold"])
def test_held_request_keeps_pipelined_input_bounded(server_factory, when):
    """While a request is held its connection is still read (a client that
    leaves is seen), but the first pipelined bytes stop the input (one read
    at most): a flood behind a held request does not grow the server, and
    the requests behind it are answered in order afterwards.  pipelined:
    the next request comes in the held one's segment (input stops where the
    parser meets it); after_hold: the flood comes once the request is held
    with nothing pending (input stops where the bytes arrive).  A guard:
    the code from before a held connection was read at all passes both;
    after_hold fails when the stop where bytes arrive (http_input) is taken
    out, both fail when a held connection's input is never stopped.  (The
    stop in the parser's loop alone only saves one read, which no memory
    figure can see.)"""
    srv = web(server_factory)
    rss0 = srv.rss_kib()
    s = connect(srv.http_port, 10)
    echo = b"GET /test/echo HTTP/1.1\r\nHost: x\r\n\r\n"
    if when == "pipelined":
        s.sendall(b"GET /test/hold HTTP/1.1\r\nHost: x\r\n\r\n" + echo)
    else:
        # held long enough for the log line and the flood
        s.sendall(b"GET /test/hold?3000 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_log(srv, r'event="httptest request held" ms=3000$')
        s.sendall(echo)
    s.setblocking(False)
    sent = 0
    try:
        while sent < 64 << 20:
            sent += s.send(b"X" * 65536)
    except BlockingIOError:
        pass
    s.setblocking(True)
    s.settimeout(10)
    assert sent < 64 << 20  # the server stopped reading
    assert srv.rss_kib() - rss0 < 16 * 1024
    st, _, data = read_response(s)
    assert (st, data) == (200, b"held")
    st, _, data = read_response(s)
    assert (st, data) == (200, b"echo")
    s.close()


def test_slow_body_is_cut_off(server_factory):
    """A body that trickles (slow POST, "R-U-Dead-Yet") does not keep the
    connection: each header_timeout must bring at least 1 KB of it; a slow
    but steady body passes."""
    srv = web(server_factory, http_opts="    header_timeout: 1s\n    max_body_size: 1MB\n")
    s = connect(srv.http_port, 5)
    start = time.time()
    s.sendall(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
    closed = False
    for _ in range(40):
        try:
            s.sendall(b"a" * 10)
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        s.settimeout(0.25)
        try:
            d = s.recv(100)
            if not d:
                closed = True
                break
        except socket.timeout:
            continue
        except ConnectionResetError:
            closed = True
            break
    assert closed, "the server kept a trickling body past header_timeout"
    assert time.time() - start < 4
    # 2 KB every 0.3 s is slow but goes on.
    s = connect(srv.http_port, 5)
    s.sendall(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 16384\r\n\r\n")
    for _ in range(8):
        time.sleep(0.3)
        s.sendall(b"b" * 2048)
    st, _, data = read_response(s)
    assert st == 200 and data == b"b" * 16384

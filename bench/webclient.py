"""bench/webclient.py — the XMPP clients the web benchmarks share (issue 17):
plain TCP c2s, WebSocket (RFC 7395) and BOSH (XEP-0124/0206) sessions that
log in with SCRAM (SHA-1 or SHA-256), bind and send available presence, and
the HTTP File Upload (XEP-0363) slot request, PUT and GET.

Written for any server, so that bench/webcompare.py runs the same code
against xmppd, ejabberd and Prosody: quotes of either kind are accepted,
stream features are waited for wherever they come, the WebSocket and BOSH
paths and the HTTP Host header are parameters, and upload URLs are fetched
from 127.0.0.1 at the URL's port with the URL's host as Host header (slots
may name the virtual host, not an address).  Also used by bench/ws.py,
bench/bosh.py and bench/upload.py (xmppd only).  Standard library only.
"""
import base64
import hashlib
import hmac
import html
import os
import re
import socket
import struct
import threading
import time
import urllib.parse

SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
BOSH_NS = "http://jabber.org/protocol/httpbind"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def _proc_rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid):
    out = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def rss_kib(pids):
    """Summed VmRSS (KiB) of the given PID(s) and all their descendants
    (ejabberd: beam.smp and its erl_child_setup)."""
    if isinstance(pids, int):
        pids = [pids]
    seen, todo, total = set(), list(pids), 0
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += _proc_rss(p)
        todo += _children(p)
    return total


def cpu_s(pids):
    """CPU seconds (user + system) the given PID(s) and their descendants
    have used so far."""
    if isinstance(pids, int):
        pids = [pids]
    seen, todo, total = set(), list(pids), 0
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
        todo += _children(p)
    return total / os.sysconf("SC_CLK_TCK")


class RssPeak(threading.Thread):
    """Samples rss_kib(pids) every 20 ms; .peak is the highest seen."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids, self.peak, self.stop = pids, 0, False

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, rss_kib(self.pids))
            time.sleep(0.02)


class Scram:
    """Client side of SCRAM-SHA-1 / SCRAM-SHA-256 (no channel binding), or
    of PLAIN (mech "PLAIN": one <auth/>, no challenge; .plain is set)."""

    def __init__(self, user, password, mech="SCRAM-SHA-1"):
        self.mech, self.password = mech, password
        self.plain = None
        if mech == "PLAIN":
            self.plain = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            return
        self.hash = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}[mech]
        self.first = f"n={user},r={base64.b64encode(os.urandom(18)).decode()}"

    def auth(self):
        if self.plain is not None:
            return f"<auth xmlns='{SASL}' mechanism='PLAIN'>{self.plain}</auth>"
        return (f"<auth xmlns='{SASL}' mechanism='{self.mech}'>"
                + base64.b64encode(("n,," + self.first).encode()).decode() + "</auth>")

    def response(self, challenge_b64):
        sf = base64.b64decode(challenge_b64).decode()
        a = dict(kv.split("=", 1) for kv in sf.split(","))
        h = self.hash
        salted = hashlib.pbkdf2_hmac(h, self.password.encode(), base64.b64decode(a["s"]),
                                     int(a["i"]))
        fb = f"c=biws,r={a['r']}"
        am = f"{self.first},{sf},{fb}".encode()
        ck = hmac.new(salted, b"Client Key", h).digest()
        cs = hmac.new(hashlib.new(h, ck).digest(), am, h).digest()
        proof = base64.b64encode(bytes(x ^ y for x, y in zip(ck, cs))).decode()
        return (f"<response xmlns='{SASL}'>"
                + base64.b64encode(f"{fb},p={proof}".encode()).decode() + "</response>")


CHALLENGE = r"<challenge[^>]*>([^<]*)</challenge>"
BIND = ("<iq xmlns='jabber:client' type='set' id='bind1'>"
        "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{}</resource></bind></iq>")
PRESENCE = "<presence xmlns='jabber:client'/>"


class TcpClient:
    """A plain c2s session: SCRAM, bind, available presence; no TLS."""

    def __init__(self, port, user, password, domain="localhost", mech="SCRAM-SHA-256",
                 resource="tcp", presence=True):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""
        hdr = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
               "xmlns:stream='http://etherx.jabber.org/streams' "
               f"to='{domain}' version='1.0'>")
        self.s.sendall(hdr.encode())
        self.until(rb"</stream:features>")
        sc = Scram(user, password, mech)
        self.s.sendall(sc.auth().encode())
        if sc.plain is None:
            m = self.until(CHALLENGE.encode())
            self.s.sendall(sc.response(m.group(1).decode()).encode())
        m = self.until(rb"<(success|failure)")
        if m.group(1) != b"success":
            raise RuntimeError(f"{user}: SASL failure: {self.buf[-300:]!r}")
        self.buf = b""
        self.s.sendall(hdr.encode())
        self.until(rb"</stream:features>")
        self.s.sendall((BIND.format(resource) + (PRESENCE if presence else "")).encode())
        m = self.until(rb"<jid>([^<]+)</jid>")
        self.jid = m.group(1).decode()

    def send(self, text):
        self.s.sendall(text.encode())

    def until(self, pat, timeout=30):
        rx = re.compile(pat, re.S)
        self.s.settimeout(timeout)
        while True:
            m = rx.search(self.buf)
            if m:
                return m
            d = self.s.recv(65536)
            if not d:
                raise EOFError(self.buf[-300:])
            self.buf += d

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


class WsClient:
    """An XMPP session over a WebSocket (RFC 7395), masked client frames
    made here; login() does SCRAM, bind and available presence."""

    def __init__(self, port, path="/ws", host="localhost"):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n")
                       .encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = self.s.recv(4096)
            if not d:
                raise EOFError(f"WebSocket upgrade on {path}: {buf!r}")
            buf += d
        head, _, self.buf = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"WebSocket upgrade on {path}: {head[:200]!r}")
        self.pending = []        # text messages read but not yet consumed

    def send(self, text):
        payload = text.encode()
        n = len(payload)
        if n < 126:
            hdr = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            hdr = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        # a zero mask: masked frames as RFC 6455 asks, without a Python XOR
        # loop per byte that would make the client the bottleneck
        self.s.sendall(hdr + b"\0\0\0\0" + payload)

    def _need(self, n):
        while len(self.buf) < n:
            d = self.s.recv(262144)
            if not d:
                raise EOFError("WebSocket closed")
            self.buf += d

    def recv(self, timeout=30):
        """The next text message (pings answered, close raises EOFError)."""
        if self.pending:
            return self.pending.pop(0)
        self.s.settimeout(timeout)
        while True:
            self._need(2)
            b0, b1 = self.buf[0], self.buf[1]
            n, off = b1 & 0x7f, 2
            if n == 126:
                self._need(4)
                n, off = struct.unpack("!H", self.buf[2:4])[0], 4
            elif n == 127:
                self._need(10)
                n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
            self._need(off + n)
            data, self.buf = self.buf[off:off + n], self.buf[off + n:]
            op = b0 & 0x0f
            if op == 0x9:        # ping: pong with the same payload
                self.s.sendall(struct.pack("!BB", 0x8a, 0x80 | len(data)) + b"\0\0\0\0" + data)
            elif op == 0x8:
                raise EOFError("WebSocket close frame")
            elif op in (0x1, 0x0):
                return data.decode()

    def until(self, pat, timeout=30):
        rx = re.compile(pat, re.S)
        deadline = time.time() + timeout
        while True:
            m = self.recv(max(0.1, deadline - time.time()))
            r = rx.search(m)
            if r:
                return r

    def login(self, user, password, domain="localhost", mech="SCRAM-SHA-256", resource="ws",
              presence=True):
        opn = f"<open xmlns='{FRAMING}' to='{domain}' version='1.0'/>"
        self.send(opn)
        self.until(r"<(\w+:)?features")
        sc = Scram(user, password, mech)
        self.send(sc.auth())
        if sc.plain is None:
            self.send(sc.response(self.until(CHALLENGE).group(1)))
        m = self.until(r"<(success|failure)")
        if m.group(1) != "success":
            raise RuntimeError(f"{user}: SASL failure over WebSocket")
        self.send(opn)
        self.until(r"<(\w+:)?features")
        self.send(BIND.format(resource))
        self.jid = self.until(r"<jid>([^<]+)</jid>").group(1)
        if presence:
            self.send(PRESENCE)
        return self.jid

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


class BoshClient:
    """An XMPP session over BOSH: SCRAM, restart, bind, available presence;
    each request on a new connection (Connection: close), so an idle session
    holds no socket and no request."""

    def __init__(self, port, user, password, domain="localhost", path="/bosh",
                 mech="SCRAM-SHA-256", resource="bosh", presence=True):
        self.port, self.path, self.domain = port, path, domain
        self.rid, self.sid = 1000 + int.from_bytes(os.urandom(3), "big"), None
        r = self.call(f" to='{domain}' wait='5' hold='1' ver='1.6' xmpp:version='1.0'"
                      " xml:lang='en'")
        m = re.search(r"sid='([^']+)'", r)
        if not m:
            raise RuntimeError(f"BOSH session creation: {r[:300]}")
        self.sid = m.group(1)
        self.until(r"SCRAM", r)
        sc = Scram(user, password, mech)
        if sc.plain is None:
            r = self.until(CHALLENGE, self.call("", sc.auth()))
            r = self.until(r"<(success|failure)",
                           self.call("", sc.response(re.search(CHALLENGE, r).group(1))))
        else:
            r = self.until(r"<(success|failure)", self.call("", sc.auth()))
        if "<success" not in r:
            raise RuntimeError(f"{user}: SASL failure over BOSH: {r[:300]}")
        self.until(r"xmpp-bind", self.call(f" to='{domain}' xmpp:restart='true' xml:lang='en'"))
        # presence in the bind request: on its own, a server that has
        # nothing to answer holds the request for the whole `wait`
        self.until(r"</jid>", self.call("", BIND.format(resource)
                                        + (PRESENCE if presence else "")))

    def call(self, attrs="", inner=""):
        self.rid += 1
        sid = f" sid='{self.sid}'" if self.sid else ""
        body = (f"<body xmlns='{BOSH_NS}' xmlns:xmpp='urn:xmpp:xbosh' rid='{self.rid}'"
                f"{sid}{attrs}" + (f">{inner}</body>" if inner else "/>")).encode()
        s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        s.sendall(f"POST {self.path} HTTP/1.1\r\nHost: {self.domain}:{self.port}\r\n"
                  f"Content-Type: text/xml; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
                  f"Connection: close\r\n\r\n".encode() + body)
        status, hdrs, data = read_response(s)
        s.close()
        if status != 200:
            raise RuntimeError(f"BOSH POST {self.path}: HTTP {status} {data[:200]!r}")
        return data.decode().replace('"', "'")

    def until(self, pat, r):
        while not re.search(pat, r):
            if "type='terminate'" in r:
                raise RuntimeError(f"BOSH session terminated: {r[:300]}")
            r = self.call()
        return r


class _Reader:
    """Buffered reads from a socket for the response parser."""

    def __init__(self, s, data):
        self.s, self.data = s, bytearray(data)
        self.chunk = bytearray(1 << 20)

    def fill(self):
        k = self.s.recv_into(self.chunk)
        if not k:
            raise EOFError("body cut short")
        self.data += self.chunk[:k]

    def line(self):
        while b"\r\n" not in self.data:
            self.fill()
        i = self.data.index(b"\r\n")
        out = bytes(self.data[:i])
        del self.data[:i + 2]
        return out

    def take(self, n, keep):
        """n bytes: returned when keep, else only counted."""
        parts = []
        while n:
            if not self.data and not keep:
                # discarding: straight into the scratch buffer, no copies
                k = self.s.recv_into(self.chunk, min(n, len(self.chunk)))
                if not k:
                    raise EOFError("body cut short")
                n -= k
                continue
            if not self.data:
                self.fill()
            k = min(n, len(self.data))
            if keep:
                parts.append(bytes(self.data[:k]))
            del self.data[:k]
            n -= k
        return b"".join(parts)


def read_response(s, sink=False):
    """One HTTP/1.1 response from socket s: (status, headers, body).  With
    sink the body is counted, not kept (body = its length); Content-Length,
    chunked and to-the-close bodies are all read."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise EOFError(f"connection closed before a response: {buf[:200]!r}")
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    r = _Reader(s, rest)
    keep = not sink
    if "content-length" in hdrs:
        n = int(hdrs["content-length"])
        body = r.take(n, keep)
        return status, hdrs, body if keep else n
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        parts, total = [], 0
        while True:
            size = int(r.line().split(b";")[0], 16)
            if size == 0:
                break
            parts.append(r.take(size, keep))
            total += size
            r.line()
        return status, hdrs, b"".join(parts) if keep else total
    parts, total = [bytes(r.data)], len(r.data)
    while True:
        try:
            k = s.recv_into(r.chunk)
        except OSError:
            break
        if not k:
            break
        total += k
        if keep:
            parts.append(bytes(r.chunk[:k]))
    return status, hdrs, b"".join(parts) if keep else total


def request_slot(client, service, filename, size, ctype="application/octet-stream"):
    """XEP-0363 (urn:xmpp:http:upload:0) slot over a TcpClient session:
    returns (put_url, put_headers dict, get_url)."""
    client.buf = b""
    client.send(f"<iq xmlns='jabber:client' type='get' id='slot-{filename}' to='{service}'>"
                f"<request xmlns='urn:xmpp:http:upload:0' filename='{filename}' size='{size}' "
                f"content-type='{ctype}'/></iq>")
    m = client.until(rb"<slot[ >].*?</slot>|type=['\"]error['\"].*?</iq>")
    slot = m.group(0).decode()
    if "<slot" not in slot:
        raise RuntimeError(f"slot refused by {service}: {slot[:400]}")
    pm = re.search(r"<put[^>]*url=['\"]([^'\"]*)['\"][^>]*?(/>|>(.*?)</put>)", slot, re.S)
    gm = re.search(r"<get[^>]*url=['\"]([^'\"]*)['\"]", slot)
    headers = {}
    for h in re.finditer(r"<header[^>]*name=['\"]([^'\"]+)['\"][^>]*>([^<]*)</header>",
                         pm.group(3) or ""):
        headers[h.group(1)] = html.unescape(h.group(2))
    return html.unescape(pm.group(1)), headers, html.unescape(gm.group(1))


def _target(url):
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http":
        raise RuntimeError(f"not a plain-HTTP URL: {url}")
    path = u.path + (f"?{u.query}" if u.query else "")
    return u.port or 80, u.netloc, path


def http_put(url, size, headers=None, ctype="application/octet-stream", chunk=None):
    """PUT size bytes (one 1 MiB buffer sent again and again) to url at
    127.0.0.1; returns (seconds from first byte sent to the answer, status)."""
    port, host, path = _target(url)
    chunk = chunk or os.urandom(1 << 20)
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    t0 = time.perf_counter()
    s.sendall((f"PUT {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {ctype}\r\n"
               f"Content-Length: {size}\r\n{extra}Connection: close\r\n\r\n").encode())
    left = size
    while left:
        n = min(left, len(chunk))
        s.sendall(chunk if n == len(chunk) else chunk[:n])
        left -= n
    status, _, body = read_response(s)
    dt = time.perf_counter() - t0
    s.close()
    return dt, status, body


def http_get(url):
    """GET url at 127.0.0.1 into a discarding reader; returns (seconds,
    status, bytes received)."""
    port, host, path = _target(url)
    s = socket.create_connection(("127.0.0.1", port), timeout=120)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    t0 = time.perf_counter()
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    status, _, n = read_response(s, sink=True)
    dt = time.perf_counter() - t0
    s.close()
    return dt, status, n

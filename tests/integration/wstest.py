"""A small RFC 6455 client for the WebSocket tests: hand-made frames, so a
test can send what no library would (an oversized frame, a binary one) and
see every frame the server sends (pings, close)."""
import base64
import hashlib
import hmac
import os
import re
import socket
import struct
import time

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"


def http_request(port, raw, timeout=10):
    """Sends raw bytes and reads one response (head and Content-Length
    body); returns (status, headers dict lowercased, body, socket)."""
    s = connect(port, timeout)
    s.sendall(raw if isinstance(raw, bytes) else raw.encode())
    return read_response(s) + (s,)


def read_response(s, buf=b""):
    """One response from socket s (buf: bytes already read); the bytes
    read past it are kept on the socket object for the next call."""
    buf = getattr(s, "_rest", b"") + buf
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise AssertionError(f"connection closed before a response: {buf!r}")
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        hdrs[k.strip().lower()] = v.strip()
    n = int(hdrs.get("content-length", "0"))
    while len(rest) < n:
        d = s.recv(1 << 20)
        if not d:
            break
        rest += d
    try:
        s._rest = rest[n:]
    except AttributeError:
        pass
    return status, hdrs, rest[:n]


class Sock(socket.socket):
    """A socket that can carry read-ahead bytes between responses."""


def connect(port, timeout=10):
    s = Sock(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


class WS:
    """One WebSocket connection to xmppd's /ws."""

    def __init__(self, port, path="/ws", protocol="xmpp", origin=None, extra="",
                 tls_context=None, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=10)
        if tls_context:
            self.sock = tls_context.wrap_socket(self.sock, server_hostname="localhost")
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n")
        if protocol:
            req += f"Sec-WebSocket-Protocol: {protocol}\r\n"
        if origin:
            req += f"Origin: {origin}\r\n"
        req += extra + "\r\n"
        self.sock.sendall(req.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = self.sock.recv(4096)
            if not d:
                break
            buf += d
        head, _, self.buf = buf.partition(b"\r\n\r\n")
        self.head = head.decode(errors="replace")
        self.status = int(self.head.split()[1]) if self.head else 0
        self.closed = False
        self.close_code = None
        self.pings = []

    def send_frame(self, opcode, payload, fin=True, mask=True):
        if isinstance(payload, str):
            payload = payload.encode()
        b0 = (0x80 if fin else 0) | opcode
        n = len(payload)
        if n < 126:
            hdr = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
        else:
            hdr = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
        if mask:
            key = os.urandom(4)
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            hdr += key
        self.sock.sendall(hdr + payload)

    def send(self, text):
        self.send_frame(0x1, text)

    def _read(self, n, deadline):
        while len(self.buf) < n:
            self.sock.settimeout(max(0.01, deadline - time.time()))
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                raise AssertionError("timed out waiting for a frame")
            except ConnectionResetError:
                d = b""
            if not d:
                self.closed = True
                raise EOFError
            self.buf += d
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self, timeout=10):
        """The next frame: (opcode, payload bytes)."""
        deadline = time.time() + timeout
        b0, b1 = self._read(2, deadline)
        n = b1 & 0x7f
        assert not b1 & 0x80, "server frames are never masked"
        if n == 126:
            n = struct.unpack("!H", self._read(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8, deadline))[0]
        return b0 & 0x0f, self._read(n, deadline)

    def recv(self, timeout=10):
        """The next text message (pings are recorded, close noted)."""
        deadline = time.time() + timeout
        while True:
            op, data = self.frame(max(0.01, deadline - time.time()))
            if op == 0x9:
                self.pings.append(data)
                continue
            if op == 0x8:
                self.close_code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                raise EOFError
            if op == 0x1:
                return data.decode()

    def recv_until(self, pattern, timeout=10):
        deadline = time.time() + timeout
        rx = re.compile(pattern, re.S)
        seen = []
        while True:
            try:
                m = self.recv(max(0.01, deadline - time.time()))
            except EOFError:
                raise AssertionError(f"closed before {pattern!r}; got {seen!r}")
            seen.append(m)
            if rx.search(m):
                return m

    def messages_to_close(self, timeout=10):
        """Every text message until the server's close frame."""
        out = []
        deadline = time.time() + timeout
        while True:
            try:
                out.append(self.recv(max(0.01, deadline - time.time())))
            except EOFError:
                return out

    def open(self, to="localhost"):
        self.send(f"<open xmlns='{NS_FRAMING}' to='{to}' version='1.0'/>")
        return self.recv_until(r"^<open ")

    def sasl_answer(self):
        m = self.recv_until(r"^<(challenge|success|failure)")
        kind = re.match(r"<(\w+)", m).group(1)
        body = re.search(r">([^<]*)</", m)
        data = body.group(1).strip() if body else ""
        return kind, (base64.b64decode(data) if data and data != "=" else b""), m

    def scram(self, user, password):
        """SCRAM-SHA-256 (the server offers no PLAIN without TLS)."""
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n={user},r={nonce}"
        self.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>"
                  + base64.b64encode(("n,," + first_bare).encode()).decode() + "</auth>")
        kind, val, m = self.sasl_answer()
        assert kind == "challenge", m
        server_first = val.decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(),
                                     base64.b64decode(attrs["s"]), int(attrs["i"]))
        final_bare = f"c={base64.b64encode(b'n,,').decode()},r={attrs['r']}"
        auth_msg = f"{first_bare},{server_first},{final_bare}".encode()
        ckey = hmac.new(salted, b"Client Key", "sha256").digest()
        csig = hmac.new(hashlib.sha256(ckey).digest(), auth_msg, "sha256").digest()
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(ckey, csig))).decode()
        self.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                  + base64.b64encode(f"{final_bare},p={proof}".encode()).decode()
                  + "</response>")
        kind, val, m = self.sasl_answer()
        assert kind == "success", m

    def login(self, user, password, host="localhost", resource="ws"):
        """SASL and bind over the WebSocket; returns the bound JID."""
        self.open(host)
        self.recv_until(r"<stream:features")
        self.scram(user, password)
        self.open(host)
        self.recv_until(r"<stream:features")
        self.send("<iq type='set' id='b1' xmlns='jabber:client'>"
                  "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  f"<resource>{resource}</resource></bind></iq>")
        m = self.recv_until(r"id='b1'")
        return re.search(r"<jid>([^<]+)</jid>", m).group(1)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

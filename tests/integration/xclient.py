"""A small hand-driven XMPP client for protocol tests: STARTTLS or direct
TLS with pyOpenSSL (which, unlike Python's ssl module, can compute every
channel binding: tls-exporter, tls-server-end-point and tls-unique), SASL
PLAIN / SCRAM-* / SCRAM-*-PLUS written out here, and resource binding.

The point is to see exactly what the server sends at each step, which a
full client library hides."""
import base64
import hashlib
import hmac
import os
import re
import select
import socket
import time

from OpenSSL import SSL, crypto

NS_STREAMS = "http://etherx.jabber.org/streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"

HASHES = {"SHA-1": "sha1", "SHA-256": "sha256", "SHA-512": "sha512"}


class XClient:
    def __init__(self, port, host="127.0.0.1", timeout=10, direct_tls=False,
                 tls_max=None, domain="localhost", cafile=None, certfile=None, keyfile=None,
                 source=None, rcvbuf=None):
        # source: the local address to connect from (127.0.0.2 is another
        # peer address on loopback, for limits kept per address).
        # rcvbuf: SO_RCVBUF set before connecting (a fixed, small receive
        # window: the kernel does not grow it, so a peer that reads nothing
        # fills its socket after a known number of bytes).
        if rcvbuf is None:
            self.sock = socket.create_connection((host, port), timeout=timeout,
                                                 source_address=(source, 0) if source else None)
        else:
            self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            self.sock.settimeout(timeout)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if source:
                self.sock.bind((source, 0))
            self.sock.connect((host, port))
        self.timeout = timeout
        self.tls = None
        self.buf = b""
        self.closed = False
        self.domain = domain
        self.tls_max = tls_max
        self.cafile = cafile
        self.certfile, self.keyfile = certfile, keyfile  # a client certificate (EXTERNAL)
        if direct_tls:
            self._handshake()

    # ---- transport ----
    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        if self.tls:
            self.tls.sendall(data)
        else:
            self.sock.sendall(data)

    def _recv_some(self, deadline):
        left = deadline - time.time()
        if left <= 0:
            return
        if self.tls and self.tls.pending():
            ready = True
        else:
            ready = bool(select.select([self.sock], [], [], left)[0])
        if not ready:
            return
        # Everything readable now (up to 1 MiB), not one TLS record: the
        # callers search the whole buffer after each call.
        chunks, got = [], 0
        while True:
            try:
                d = self.tls.recv(65536) if self.tls else self.sock.recv(65536)
            except SSL.WantReadError:
                break
            except (SSL.ZeroReturnError, ConnectionResetError):
                d = b""
            except SSL.SysCallError:
                d = b""
            except SSL.Error:
                d = b""
            if not d:
                self.closed = True
                break
            chunks.append(d)
            got += len(d)
            if got >= (1 << 20):
                break
            if not (self.tls and self.tls.pending()) and \
                    not select.select([self.sock], [], [], 0)[0]:
                break
        self.buf += b"".join(chunks)

    def recv_until(self, pattern, timeout=None):
        if isinstance(pattern, str):
            pattern = pattern.encode()
        rx = re.compile(pattern, re.S)
        deadline = time.time() + (timeout or self.timeout)
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            if self.closed or time.time() > deadline:
                raise AssertionError(f"no match for {pattern!r} in {self.buf!r}")
            self._recv_some(deadline)

    def take(self, pattern, timeout=None):
        """As recv_until, but removes only the match from the buffer: what
        arrived before it stays to be read."""
        if isinstance(pattern, str):
            pattern = pattern.encode()
        rx = re.compile(pattern, re.S)
        deadline = time.time() + (timeout or self.timeout)
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[:m.start()] + self.buf[m.end():]
                return m
            if self.closed or time.time() > deadline:
                raise AssertionError(f"no match for {pattern!r} in {self.buf!r}")
            self._recv_some(deadline)

    def before(self, pattern, timeout=None):
        """As take; returns the bytes that were buffered ahead of the match
        (they stay in the buffer) and the match."""
        m = self.take(pattern, timeout)
        return m.string[:m.start()], m

    def roundtrip(self, payload="<ping xmlns='urn:xmpp:ping'/>"):
        """An IQ get to the account (a ping unless `payload` says otherwise)
        and its answer: everything this stream sent before has been handled
        by then (RFC 6120 10.1, in-order processing), and everything the
        server had routed to this session before it answered arrived ahead
        of the answer.  Returns what arrived ahead of it (it stays in the
        buffer)."""
        self._rt = getattr(self, "_rt", 0) + 1
        rid = f"rt{self._rt}"
        self.send(f"<iq type='get' id='{rid}'>{payload}</iq>")
        return self.before(r"<iq[^>]*id=['\"]" + rid + r"['\"][^>]*(/>|>.*?</iq>)")[0]

    def end_stream(self, timeout=None):
        """Closes the stream (RFC 6120 4.4) and waits until the server has
        closed the connection: it ends the session first (unbound, its
        unavailable presence sent), so this is the round trip of a close."""
        self.send("</stream:stream>")
        return self.read_to_close(timeout)

    def read_to_close(self, timeout=None):
        deadline = time.time() + (timeout or self.timeout)
        while not self.closed:
            if time.time() > deadline:
                raise AssertionError(f"server did not close; got {self.buf!r}")
            self._recv_some(deadline)
        return self.buf

    def stream_error(self, timeout=None):
        self.read_to_close(timeout)
        m = re.search(rb"<stream:error>\s*<([a-z-]+) xmlns=", self.buf)
        assert m, self.buf
        return m.group(1).decode()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # ---- stream ----
    def open_stream(self):
        self.send(f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                  f"xmlns:stream='{NS_STREAMS}' to='{self.domain}' version='1.0'>")
        self.recv_until(r"<stream:stream[^>]*>")
        return self.recv_until(r"<stream:features\s*/>|<stream:features>.*?</stream:features>"
                               ).group(0).decode()

    def _handshake(self):
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
        if self.tls_max:
            ctx.set_max_proto_version(self.tls_max)
        if self.certfile:
            ctx.use_certificate_chain_file(self.certfile)
            ctx.use_privatekey_file(self.keyfile)
        if self.cafile:
            ctx.load_verify_locations(self.cafile)
            ctx.set_verify(SSL.VERIFY_PEER, lambda *a: a[-1] == 1)
        conn = SSL.Connection(ctx, self.sock)
        conn.set_tlsext_host_name(self.domain.encode())
        conn.set_connect_state()
        self.sock.setblocking(True)
        conn.do_handshake()
        self.tls = conn

    def starttls(self):
        self.send(f"<starttls xmlns='{NS_TLS}'/>")
        self.recv_until(r"<proceed xmlns=['\"]" + re.escape(NS_TLS) + r"['\"]\s*/>")
        assert self.buf == b"", self.buf
        self._handshake()

    def tls_version(self):
        return self.tls.get_protocol_version_name()

    def cb_data(self, kind):
        if kind == "tls-exporter":
            return self.tls.export_keying_material(b"EXPORTER-Channel-Binding", 32)
        if kind == "tls-server-end-point":
            cert = self.tls.get_peer_certificate().to_cryptography()
            algo = cert.signature_hash_algorithm.name
            if algo in ("md5", "sha1"):
                algo = "sha256"
            der = crypto.dump_certificate(crypto.FILETYPE_ASN1, self.tls.get_peer_certificate())
            return hashlib.new(algo, der).digest()
        if kind == "tls-unique":
            return self.tls.get_finished()
        raise ValueError(kind)

    # ---- SASL ----
    def auth(self, mech, initial=None):
        data = "=" if initial == b"" else (base64.b64encode(initial).decode() if initial else "")
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='{mech}'>{data}</auth>")

    def sasl_answer(self):
        """Returns (kind, payload-bytes or condition)."""
        m = self.recv_until(r"<(challenge|success|failure)[^>]*?(/>|>(.*?)</\1>)")
        kind = m.group(1).decode()
        body = m.group(3) or b""
        if kind == "failure":
            c = re.search(rb"<([a-z-]+)\s*/>", body)
            return kind, (c.group(1).decode() if c else "")
        body = body.strip()
        return kind, (b"" if body in (b"", b"=") else base64.b64decode(body))

    def plain(self, user, password, authzid=""):
        self.auth("PLAIN", f"{authzid}\0{user}\0{password}".encode())
        return self.sasl_answer()

    def scram(self, user, password, hash_name="SHA-256", cb=None, authzid=None,
              gs2_flag=None):
        """Runs SCRAM-<hash>[-PLUS]; returns the final (kind, value)."""
        h = HASHES[hash_name]
        mech = f"SCRAM-{hash_name}" + ("-PLUS" if cb else "")
        if gs2_flag is None:
            gs2_flag = f"p={cb}" if cb else "n"
        gs2 = f"{gs2_flag},{'a=' + authzid if authzid else ''},"
        cnonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n={user},r={cnonce}"
        self.auth(mech, (gs2 + first_bare).encode())
        kind, val = self.sasl_answer()
        if kind != "challenge":
            return kind, val
        server_first = val.decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        assert attrs["r"].startswith(cnonce), server_first
        salt = base64.b64decode(attrs["s"])
        it = int(attrs["i"])
        cbind = gs2.encode() + (self.cb_data(cb) if cb else b"")
        final_bare = f"c={base64.b64encode(cbind).decode()},r={attrs['r']}"
        auth_msg = f"{first_bare},{server_first},{final_bare}".encode()
        salted = hashlib.pbkdf2_hmac(h, password.encode(), salt, it)
        ckey = hmac.new(salted, b"Client Key", h).digest()
        stored = hashlib.new(h, ckey).digest()
        csig = hmac.new(stored, auth_msg, h).digest()
        proof = bytes(a ^ b for a, b in zip(ckey, csig))
        final = f"{final_bare},p={base64.b64encode(proof).decode()}"
        self.send(f"<response xmlns='{NS_SASL}'>{base64.b64encode(final.encode()).decode()}"
                  f"</response>")
        kind, val = self.sasl_answer()
        if kind == "success":
            skey = hmac.new(salted, b"Server Key", h).digest()
            ssig = hmac.new(skey, auth_msg, h).digest()
            assert val == b"v=" + base64.b64encode(ssig), (val, "server signature mismatch")
        return kind, val

    def bind(self, resource=None, iq_id="bind1"):
        res = f"<resource>{resource}</resource>" if resource else ""
        self.send(f"<iq type='set' id='{iq_id}'><bind xmlns='{NS_BIND}'>{res}</bind></iq>")
        m = self.recv_until(r"<iq[^>]*id=['\"]" + iq_id + r"['\"][^>]*>.*?</iq>|"
                            r"<iq[^>]*id=['\"]" + iq_id + r"['\"][^>]*/>")
        text = m.group(0).decode()
        jid = re.search(r"<jid>([^<]+)</jid>", text)
        return text, (jid.group(1) if jid else None)


def login(port, user, password, mech="SCRAM-SHA-256", resource=None, cb=None, **kw):
    """STARTTLS (unless direct_tls), SASL, restart, bind; returns (client, jid)."""
    c = XClient(port, **kw)
    c.open_stream()
    if not c.tls:
        c.starttls()
        c.open_stream()
    if mech == "PLAIN":
        kind, val = c.plain(user, password)
    else:
        kind, val = c.scram(user, password, mech[len("SCRAM-"):].replace("-PLUS", ""), cb=cb)
    assert kind == "success", (kind, val)
    feats = c.open_stream()
    assert "urn:ietf:params:xml:ns:xmpp-bind" in feats, feats
    c.features = feats  # the post-authentication stream features
    text, jid = c.bind(resource)
    assert jid, text
    return c, jid

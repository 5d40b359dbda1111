"""XMPP over BOSH (XEP-0124, XEP-0206; src/http/bosh.c) through the wire:
session creation and its attributes, SASL (SCRAM: PLAIN needs TLS), restart and bind over
BOSH, a message exchange with a TCP slixmpp client, request ids (out of
order, repeated, outside the window), unknown sid, terminate, the
inactivity timeout ending the session as the c2s session it is,
overactivity, the queue bound, and the empty answer after `wait`.  Each
request goes on a fresh HTTP connection, so requests of one session reach
both workers and the owner hand-off is used."""
import base64
import hashlib
import hmac
import os
import re

import pytest
import socket
import ssl
import threading

import slixmpp

from helpers import expect, online, users
from test_c2s import cert_path
from test_http import get, wait_log, web
from xmpptest import free_port
from wstest import connect, read_response
from xmpptest import run_slixmpp

NS = "http://jabber.org/protocol/httpbind"
XB = "urn:xmpp:xbosh"


class Bosh:
    def __init__(self, port, path="/bosh", tls=None):
        self.port, self.path, self.tls = port, path, tls
        self.rid = 1000
        self.sid = None

    def send(self, inner="", attrs="", rid=None):
        """Posts one body on a new connection; returns the socket."""
        if rid is None:
            self.rid += 1
            rid = self.rid
        sid = f" sid='{self.sid}'" if self.sid else ""
        body = (f"<body xmlns='{NS}' xmlns:xmpp='{XB}' rid='{rid}'{sid}{attrs}"
                + (f">{inner}</body>" if inner else "/>"))
        return self.post(body)

    def post(self, body):
        b = body.encode()
        s = connect(self.port, 15)
        if self.tls:
            s = self.tls.wrap_socket(s, server_hostname="localhost")
        s.sendall((f"POST {self.path} HTTP/1.1\r\nHost: localhost\r\n"
                   f"Content-Type: text/xml; charset=utf-8\r\nContent-Length: {len(b)}\r\n"
                   "Connection: close\r\n\r\n").encode() + b)
        return s

    @staticmethod
    def read(s):
        st, h, data = read_response(s)
        s.close()
        assert st == 200, (st, data)
        return data.decode().replace('"', "'")

    def call(self, inner="", attrs="", rid=None):
        return self.read(self.send(inner, attrs, rid))

    def until(self, pattern, first=None, tries=10):
        """The response of `first` (or of empty polls) until pattern matches."""
        r = first if first is not None else self.call()
        for _ in range(tries):
            m = re.search(pattern, r, re.S)
            if m:
                return r
            assert "type='terminate'" not in r, r
            r = self.call()
        raise AssertionError(f"{pattern!r} never came; last {r!r}")

    def create(self, wait=5, hold=1, to="localhost"):
        r = self.call(attrs=f" to='{to}' wait='{wait}' hold='{hold}' ver='1.6' "
                            "xml:lang='en' xmpp:version='1.0'")
        m = re.search(r"sid='([0-9a-f]+)'", r)
        assert m, r
        self.sid = m.group(1)
        return r

    def login(self, user, pw="pw", resource="bosh"):
        """SCRAM-SHA-256 (no PLAIN without TLS), restart and bind over BOSH."""
        r = self.until(r"<mechanism>SCRAM-SHA-256</mechanism>", self.create())
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n={user},r={nonce}"
        r = self.call("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>"
                      + base64.b64encode(("n,," + first_bare).encode()).decode() + "</auth>")
        r = self.until(r"<challenge[^>]*>([^<]+)</challenge>", r)
        server_first = base64.b64decode(
            re.search(r"<challenge[^>]*>([^<]+)</challenge>", r).group(1)).decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        salted = hashlib.pbkdf2_hmac("sha256", pw.encode(), base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        final_bare = f"c={base64.b64encode(b'n,,').decode()},r={attrs['r']}"
        auth_msg = f"{first_bare},{server_first},{final_bare}".encode()
        ckey = hmac.new(salted, b"Client Key", "sha256").digest()
        csig = hmac.new(hashlib.sha256(ckey).digest(), auth_msg, "sha256").digest()
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(ckey, csig))).decode()
        r = self.call("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                      + base64.b64encode(f"{final_bare},p={proof}".encode()).decode()
                      + "</response>")
        self.until(r"<success", r)
        r = self.until(r"urn:ietf:params:xml:ns:xmpp-bind",
                       self.call(attrs=" xmpp:restart='true' to='localhost'"))
        r = self.call(f"<iq xmlns='jabber:client' type='set' id='b1'>"
                      f"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                      f"<resource>{resource}</resource></bind></iq>")
        r = self.until(r"<jid>([^<]+)</jid>", r)
        return re.search(r"<jid>([^<]+)</jid>", r).group(1)


def bosh_srv(server_factory, opts=""):
    return web(server_factory, module=False, http_opts=opts)


UNAVAILABLE = r"<presence[^>]*from='alice@localhost/bosh'[^>]*type='unavailable'"


def online_bosh(srv):
    """alice over BOSH, available, with directed presence to bob/probe (on
    TCP), who then hears of her session's end (RFC 6121 4.6.3)."""
    users(srv, "alice", "bob")
    probe, _ = online(srv, "bob", resource="probe")
    b = Bosh(srv.http_port)
    assert b.login("alice") == "alice@localhost/bosh"
    r = b.call("<presence xmlns='jabber:client'/>"
               "<presence xmlns='jabber:client' to='bob@localhost/probe'/>")
    expect(probe, r"<presence[^>]*from='alice@localhost/bosh'")
    return b, probe, r


def test_session_creation_response(server_factory):
    srv = bosh_srv(server_factory)
    b = Bosh(srv.http_port)
    r = b.create(wait=30, hold=5)
    head = re.search(r"<body [^>]*>", r).group(0)
    for a in ("wait='30'", "hold='1'", "requests='2'", "inactivity='60'", "polling='2'",
              "maxpause='120'", "ver='1.11'", "from='localhost'", "xmpp:version='1.0'",
              "xmpp:restartlogic='true'", f"xmlns='{NS}'"):
        assert a in head, (a, head)
    assert re.search(r"authid='[0-9a-f]{32}'", head)
    # XEP-0206: the stream features come in the session's first response
    assert re.search(r"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>", r)


def test_wait_is_cut_to_max_wait_and_answered_empty(server_factory):
    srv = bosh_srv(server_factory, "    bosh_max_wait: 1s\n")
    b = Bosh(srv.http_port)
    r = b.until(r"<mechanism>", b.create(wait=60))
    assert "wait='1'" in r
    # nothing to say: the held request is answered empty after wait
    assert re.fullmatch(rf"<body xmlns='{NS}' xmlns:stream='[^']+'/>", b.call())


def test_login_restart_bind_and_message_with_tcp_client(server_factory):
    srv = bosh_srv(server_factory)
    users(srv, "alice", "bob")
    b = Bosh(srv.http_port)
    assert b.login("alice") == "alice@localhost/bosh"
    b.call("<presence xmlns='jabber:client'/>")
    assert "jid=alice@localhost/bosh" in srv.log_text()

    got, ready = [], threading.Event()

    class Bob(slixmpp.ClientXMPP):
        def __init__(self):
            super().__init__("bob@localhost/tcp", "pw")
            self.ssl_context = ssl.create_default_context(cafile=cert_path(srv))
            self.add_event_handler("session_start", self.start)
            self.add_event_handler("message", self.on_message)

        async def start(self, _):
            self.send_presence()
            self.send_message(mto="alice@localhost/bosh", mbody="hello over tcp", mtype="chat")
            ready.set()

        def on_message(self, msg):
            got.append(str(msg["body"]))
            self.disconnect()

    t = threading.Thread(target=lambda: run_slixmpp(lambda: Bob(), ("127.0.0.1", srv.c2s_port),
                                                    timeout=20))
    t.start()
    r = b.until(r"hello over tcp")
    assert re.search(r"<message xmlns='jabber:client' [^>]*from='bob@localhost/tcp'", r)
    assert ready.wait(10)
    b.call("<message xmlns='jabber:client' to='bob@localhost/tcp' type='chat'>"
           "<body>hello over bosh</body></message>")
    t.join(20)
    assert got == ["hello over bosh"]


def test_rid_out_of_order_waits_for_the_gap(server_factory):
    srv = bosh_srv(server_factory)
    b, probe, _ = online_bosh(srv)
    r0 = b.rid
    # rid+2 first: held back until rid+1 came, so ping 2 is handled after ping 1
    s2 = b.send("<iq xmlns='jabber:client' type='get' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>",
                rid=r0 + 2)
    s1 = b.send("<iq xmlns='jabber:client' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
                rid=r0 + 1)
    b.rid = r0 + 2
    got = b.read(s1) + b.read(s2)
    got = b.until(r"id='p2'", got) if "id='p2'" not in got else got
    assert got.index("id='p1'") < got.index("id='p2'"), got


@pytest.mark.slow  # timers; the ThreadSanitizer pass keeps the other BOSH tests
def test_repeated_rid_gets_the_same_response(server_factory):
    srv = bosh_srv(server_factory)
    b, probe, _ = online_bosh(srv)
    r = b.call("<iq xmlns='jabber:client' type='get' id='rt'><ping xmlns='urn:xmpp:ping'/></iq>")
    r = b.until(r"id='rt'", r)
    rid = b.rid
    again = b.call(rid=rid)  # the response "was lost": asked again
    assert again == r
    # the window is `requests` (2): an rid older than that is unknown
    b.call()
    b.call()
    assert "condition='item-not-found'" in b.call(rid=rid)
    expect(probe, UNAVAILABLE)


@pytest.mark.slow  # timers; the ThreadSanitizer pass keeps the other BOSH tests
def test_rid_beyond_the_window_is_item_not_found(server_factory):
    srv = bosh_srv(server_factory)
    b, probe, _ = online_bosh(srv)
    r = b.call(rid=b.rid + 3)
    assert "type='terminate'" in r and "condition='item-not-found'" in r
    expect(probe, UNAVAILABLE)


def test_unknown_sid_and_bad_requests(server_factory):
    srv = bosh_srv(server_factory)
    b = Bosh(srv.http_port)
    b.sid = "0123456789abcdef0123456789abcdef"
    assert re.fullmatch(rf"<body xmlns='{NS}' type='terminate' condition='item-not-found'/>",
                        b.call())
    # not XML, not a body, a creation without `to`: bad-request
    assert "condition='bad-request'" in Bosh.read(b.post("<body"))
    assert "condition='bad-request'" in Bosh.read(b.post("<iq xmlns='jabber:client'/>"))
    assert "condition='bad-request'" in Bosh.read(
        b.post(f"<body xmlns='{NS}' rid='5' wait='5' hold='1'/>"))
    # only POST
    assert get(srv.http_port, "/bosh")[0] == 405


@pytest.mark.slow  # timers; the ThreadSanitizer pass keeps the other BOSH tests
def test_client_terminate_ends_the_session(server_factory):
    srv = bosh_srv(server_factory)
    b, probe, _ = online_bosh(srv)
    r = b.call("<presence xmlns='jabber:client' type='unavailable'/>", attrs=" type='terminate'")
    assert "type='terminate'" in r
    expect(probe, UNAVAILABLE)
    assert "condition='item-not-found'" in b.call()


@pytest.mark.slow  # timers; the ThreadSanitizer pass keeps the other BOSH tests
def test_inactivity_ends_the_session(server_factory):
    srv = bosh_srv(server_factory, "    bosh_max_inactivity: 1s\n")
    b, probe, _ = online_bosh(srv)
    # no request held from here: after 1 s the session ends as a silent stream
    expect(probe, UNAVAILABLE, timeout=10)
    assert "condition='item-not-found'" in b.call()


@pytest.mark.slow  # timers; the ThreadSanitizer pass keeps the other BOSH tests
def test_pause_beyond_maxpause_is_policy_violation(server_factory):
    srv = bosh_srv(server_factory, "    bosh_max_pause: 5s\n")
    b, probe, _ = online_bosh(srv)
    assert "condition='policy-violation'" in b.call(attrs=" pause='60'")
    expect(probe, UNAVAILABLE)


@pytest.mark.slow  # timers; the ThreadSanitizer pass keeps the other BOSH tests
def test_overactivity_is_policy_violation(server_factory):
    srv = bosh_srv(server_factory)
    b, probe, _ = online_bosh(srv)
    held = b.send()          # held for `wait`
    r = b.call()             # a second empty one at once: held is answered ...
    assert "policy-violation" in r, r
    b.read(held)
    expect(probe, UNAVAILABLE)


@pytest.mark.slow  # timers; the ThreadSanitizer pass keeps the other BOSH tests
def test_overactivity_is_judged_in_rid_order(server_factory):
    # The second empty request may reach the session first (requests travel
    # between workers): it waits for the gap and is judged in rid order.
    srv = bosh_srv(server_factory)
    b, probe, _ = online_bosh(srv)
    second = b.send(rid=b.rid + 2)
    held = b.send(rid=b.rid + 1)
    r = Bosh.read(second)
    assert "policy-violation" in r, r
    b.read(held)
    expect(probe, UNAVAILABLE)


@pytest.mark.slow  # timers; the ThreadSanitizer pass keeps the other BOSH tests
def test_queue_bound_ends_the_session(server_factory):
    srv = bosh_srv(server_factory, "    bosh_max_queue: 4KB\n")
    b, probe, _ = online_bosh(srv)
    # no request held: what comes for the session queues up to 4 KB
    for i in range(40):
        probe.send(f"<message to='alice@localhost/bosh' type='chat' id='q{i}'>"
                   f"<body>{'x' * 200}</body></message>")
    expect(probe, UNAVAILABLE)
    assert "bosh queue full" in srv.log_text()


def test_host_meta_names_bosh(server_factory):
    srv = bosh_srv(server_factory)
    st, h, body = get(srv.http_port, "/.well-known/host-meta")
    assert (f"<Link rel='urn:xmpp:alt-connections:xbosh' "
            f"href='http://localhost:{srv.http_port}/bosh'/>").encode() in body
    st, h, body = get(srv.http_port, "/.well-known/host-meta.json")
    assert (f'"href":"http://localhost:{srv.http_port}/bosh"').encode() in body


def test_held_request_whose_client_left_is_dropped(server_factory):
    """A held request whose connection closes leaves the session: what comes
    next goes to the next request, not into the dead one, and the client may
    repeat the request it got no answer to."""
    srv = bosh_srv(server_factory)
    b, probe, _ = online_bosh(srv)
    gone = b.send()  # held (hold 1)
    gone.close()
    wait_log(srv, rf'event="bosh request gone" .*rid={b.rid}$')
    probe.send("<message to='alice@localhost/bosh' type='chat' id='m1'><body>one</body></message>")
    r = b.call()  # answered at once with what came meanwhile
    assert "<body>one</body>" in r, r
    # Again, and the client repeats the rid it got no answer to.
    gone = b.send()
    gone.close()
    wait_log(srv, rf'event="bosh request gone" .*rid={b.rid}$')
    again = b.send(rid=b.rid)
    probe.send("<message to='alice@localhost/bosh' type='chat' id='m2'><body>two</body></message>")
    r = Bosh.read(again)
    assert "<body>two</body>" in r, r
    # The session goes on; nothing of it ended.
    r = b.call("<iq xmlns='jabber:client' type='get' id='p1' to='localhost'>"
               "<ping xmlns='urn:xmpp:ping'/></iq>")
    b.until(r"<iq[^>]*id='p1'", r)
    assert "bosh session terminated" not in srv.log_text()


def test_bosh_over_https_is_a_secure_stream(server_factory):
    """XEP-0206 Security: over an HTTPS listener the stream is as secure as
    a TLS c2s stream (PLAIN is offered), without -PLUS (no channel binding
    reaches the session over HTTP); plain HTTP keeps PLAIN back."""
    plain = free_port()
    srv = bosh_srv(server_factory, "    tls: true\n"
                   f"  - port: {plain}\n    ip: 127.0.0.1\n    module: http\n")
    users(srv, "alice")
    b = Bosh(srv.http_port, tls=ssl.create_default_context(cafile=cert_path(srv)))
    r = b.until(r"<mechanisms", b.create())
    mechs = re.findall(r"<mechanism>([^<]+)</mechanism>", r)
    assert "PLAIN" in mechs and "SCRAM-SHA-256" in mechs, mechs
    assert not [m for m in mechs if m.endswith("-PLUS")], mechs
    r = b.call("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
               + base64.b64encode(b"\0alice\0pw").decode() + "</auth>")
    b.until(r"<success", r)
    r = b.until(r"urn:ietf:params:xml:ns:xmpp-bind",
                b.call(attrs=" xmpp:restart='true' to='localhost'"))
    r = b.call("<iq xmlns='jabber:client' type='set' id='b1'>"
               "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    b.until(r"<jid>alice@localhost/", r)
    # Plain HTTP: the policy of a c2s stream without TLS.
    p = Bosh(plain)
    r = p.until(r"<mechanisms", p.create())
    mechs = re.findall(r"<mechanism>([^<]+)</mechanism>", r)
    assert "PLAIN" not in mechs and "SCRAM-SHA-256" in mechs, mechs

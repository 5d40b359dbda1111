"""Federation between two xmppd instances on two loopback addresses
(a.test on 127.0.0.1, b.test on 127.0.0.2), each finding the other through
s2s_hosts: dialback with self-signed certificates, SASL EXTERNAL with
certificates from a test CA, policy refusals, messages, presence
subscriptions and IQs across, a remote domain that never answers, and the
xmppctl commands."""
import os
import re
import socket
import ssl
import subprocess
import time

import pytest

import helpers
from helpers import online, users
from xmpptest import free_port

A_IP, B_IP = "127.0.0.1", "127.0.0.2"


def listen_yaml(ip, c2s, s2s):
    return (f"  - port: {c2s}\n    ip: {ip}\n    module: c2s\n"
            f"  - port: {s2s}\n    ip: {ip}\n    module: s2s\n")


class Pair:
    def __init__(self, a, b):
        self.a, self.b = a, b


def make_pair(server_factory, a_extra="", b_extra="", certs=None, start_b=True, a_hosts=""):
    """a.test and b.test; certs: None (self-signed each) or {"a": (cert, key), ...,
    "ca": cafile}."""
    ports = {"a": (free_port(addr=A_IP), free_port(addr=A_IP)),
             "b": (free_port(addr=B_IP), free_port(addr=B_IP))}
    servers = {}
    for name, ip, other, oip in (("a", A_IP, "b", B_IP), ("b", B_IP, "a", A_IP)):
        c2s, s2s = ports[name]
        extra = (f"s2s_hosts:\n  {other}.test: \"{oip}:{ports[other][1]}\"\n"
                 + (a_hosts if name == "a" else "") + "s2s_connect_timeout: 5s\n")
        if certs:
            extra += f"certfiles:\n  - {certs[name]}\nca_file: {certs['ca']}\n"
        extra += a_extra if name == "a" else b_extra
        servers[name] = (dict(hosts=(f"{name}.test",), listen=listen_yaml(ip, c2s, s2s),
                              extra_yaml=extra), c2s)
    started = {}
    for name in ("a", "b"):
        if name == "b" and not start_b:
            break
        kw, c2s = servers[name]
        srv = server_factory(**kw)
        srv.c2s_port, srv.s2s_port = c2s, ports[name][1]
        srv.ip = A_IP if name == "a" else B_IP
        srv.domain = f"{name}.test"
        users(srv, "alice", "bob", "carol")
        started[name] = srv
    return Pair(started["a"], started.get("b"))


def expect(c, pattern, timeout=10):
    """helpers.expect with more time: stanzas cross two servers."""
    return helpers.expect(c, pattern, timeout)


def connections(srv):
    r = srv.ctl_run("s2s_connections")
    assert r.returncode == 0, r.stderr
    return r.stdout


def read_until(sock, pat, buf=b""):
    """Reads sock until the bytes pattern pat matches what came; all of it."""
    while not re.search(pat, buf, re.S):
        chunk = sock.recv(65536)
        assert chunk, buf
        buf += chunk
    return buf


def incoming_over_tls(raw, header, name):
    """Plays the initiating server on the connected socket raw: the stream
    header, STARTTLS (no certificate check), the header again.  The TLS
    socket and what came up to its features."""
    raw.sendall(header)
    read_until(raw, rb"</stream:features>")
    raw.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    read_until(raw, rb"<proceed")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    tls = ctx.wrap_socket(raw, server_hostname=name)
    tls.sendall(header)
    return tls, read_until(tls, rb"</stream:features>")


def test_dialback_messages_both_ways(server_factory):
    p = make_pair(server_factory)
    a, ajid = online(p.a, "alice", "r")
    b, bjid = online(p.b, "bob", "r")
    a.send(f"<message to='{bjid}' type='chat' id='m1'><body>hello b</body></message>")
    m = expect(b, r"<message[^>]*>.*?hello b.*?</message>")
    assert f"from='{ajid}'" in m, m
    b.send(f"<message to='alice@a.test' type='chat' id='m2'><body>hello a</body></message>")
    m = expect(a, r"<message[^>]*>.*?hello a.*?</message>")
    assert f"from='{bjid}'" in m, m
    # Both directions are authenticated with dialback (self-signed certificates).
    ca, cb = connections(p.a), connections(p.b)
    assert re.search(r"out a\.test -> b\.test auth=dialback", ca), ca
    assert re.search(r"in a\.test <- b\.test auth=dialback", ca), ca
    assert re.search(r"out b\.test -> a\.test auth=dialback", cb), cb
    # An IQ across and its answer.
    a.send(f"<iq type='get' id='v1' to='b.test'><query xmlns='jabber:iq:version'/></iq>")
    r = expect(a, r"<iq[^>]*id='v1'.*?</iq>")
    assert "type='result'" in r and "xmppd" in r, r
    a.close()
    b.close()


def test_presence_subscription_across(server_factory):
    p = make_pair(server_factory, a_extra="modules:\n  mod_roster: {}\n",
                  b_extra="modules:\n  mod_roster: {}\n")
    a, ajid = online(p.a, "alice", "r")
    b, bjid = online(p.b, "bob", "r")
    a.send("<presence to='bob@b.test' type='subscribe'/>")
    sub = expect(b, r"<presence[^>]*type='subscribe'[^>]*/?>")
    assert "from='alice@a.test'" in sub, sub
    b.send("<presence to='alice@a.test' type='subscribed'/>")
    # The approval, then bob's presence that follows it (RFC 6121 3.1.5), in
    # that order (RFC 6120 10.1): the approval passes alice's roster first,
    # and the incoming stream waits for it.
    got = ""
    deadline = time.time() + 10
    while not re.search(rf"<presence[^>]*from='{re.escape(bjid)}'", got):
        assert time.time() < deadline, got
        got += expect(a, r"<presence[^>]*/>|<presence[^>]*>.*?</presence>")
    assert re.search(r"<presence[^>]*from='bob@b\.test'[^>]*type='subscribed'|"
                     r"<presence[^>]*type='subscribed'[^>]*from='bob@b\.test'", got), got
    b.send("<presence><status>busy</status></presence>")
    assert "busy" in expect(a, r"<presence[^>]*from='bob@b\.test/r'.*?</presence>")
    a.close()
    b.close()


def test_unknown_remote_bounces_after_timeout(server_factory):
    # A host that accepts TCP but never speaks: the connect timeout bounces.
    mute = socket.socket()
    mute.bind((B_IP, 0))
    mute.listen(5)
    port = mute.getsockname()[1]
    try:
        p = make_pair(server_factory, start_b=False,
                      a_hosts=f"  mute.test: \"{B_IP}:{port}\"\n")
        a, ajid = online(p.a, "alice", "r")
        a.send("<message to='x@mute.test' type='chat' id='t1'><body>x</body></message>")
        e = expect(a, r"<message[^>]*id='t1'.*?</message>", timeout=15)
        assert "type='error'" in e and "remote-server-timeout" in e, e
        # Nothing listening at all: remote-server-not-found.
        a.send("<message to='x@b.test' type='chat' id='t2'><body>x</body></message>")
        e = expect(a, r"<message[^>]*id='t2'.*?</message>", timeout=15)
        assert "type='error'" in e and "remote-server-not-found" in e, e
        a.close()
    finally:
        mute.close()


# ---- certificates from a test CA: SASL EXTERNAL (XEP-0178) ----

def ca_certs(tmp_path):
    from prosody import TestCA
    ca = TestCA(str(tmp_path / "ca"))
    out = {"ca": ca.cert}
    for name in ("a", "b"):
        cp = ca.issue(f"{name}.test")
        out[name] = f"{cp.cert}\n  - {cp.key}"
    return out


def test_sasl_external_with_ca_certificates(server_factory, tmp_path):
    p = make_pair(server_factory, certs=ca_certs(tmp_path),
                  a_extra="s2s_verify_certificates: true\n",
                  b_extra="s2s_verify_certificates: true\n")
    a, ajid = online(p.a, "alice", "r")
    b, bjid = online(p.b, "bob", "r")
    a.send(f"<message to='{bjid}' type='chat'><body>over sasl</body></message>")
    assert f"from='{ajid}'" in expect(b, r"<message[^>]*>.*?over sasl.*?</message>")
    b.send(f"<message to='{ajid}' type='chat'><body>and back</body></message>")
    assert f"from='{bjid}'" in expect(a, r"<message[^>]*>.*?and back.*?</message>")
    ca, cb = connections(p.a), connections(p.b)
    assert "out a.test -> b.test auth=sasl" in ca and "in a.test <- b.test auth=sasl" in ca, ca
    assert "out b.test -> a.test auth=sasl" in cb, cb
    # disconnect_s2s closes both directions; the next stanza reopens.
    r = p.a.ctl_run("disconnect_s2s", "b.test")
    assert r.returncode == 0 and r.stdout.strip() == "2", r.stdout + r.stderr
    # The routes go when the streams have closed, which takes b.test's part
    # too, and nothing is sent to a client then: poll a.test's own list (a
    # poll for a state; it fails at the deadline, it cannot pass early).
    deadline = time.time() + 5
    while "b.test" in connections(p.a):
        assert time.time() < deadline, connections(p.a)
        time.sleep(0.05)
    a.send(f"<message to='{bjid}' type='chat'><body>again</body></message>")
    expect(b, r"<message[^>]*>.*?again.*?</message>")
    a.close()
    b.close()


def test_verify_certificates_refuses_self_signed(server_factory):
    # b demands valid certificates; a has only its self-signed one.
    p = make_pair(server_factory, b_extra="s2s_verify_certificates: true\n")
    a, ajid = online(p.a, "alice", "r")
    a.send("<message to='bob@b.test' type='chat' id='r1'><body>x</body></message>")
    e = expect(a, r"<message[^>]*id='r1'.*?</message>", timeout=15)
    assert "type='error'" in e and "remote-server-not-found" in e, e
    assert "b.test" not in connections(p.a)
    a.close()


def test_s2s_access_denies_a_domain(server_factory):
    deny = ("acl:\n  bad:\n    server: [a.test]\n"
            "access_rules:\n  s2s_in:\n    - deny: bad\n    - allow: all\n"
            "s2s_access: s2s_in\n")
    p = make_pair(server_factory, b_extra=deny)
    a, _ = online(p.a, "alice", "r")
    b, bjid = online(p.b, "bob", "r")
    # a cannot reach b ...
    a.send(f"<message to='{bjid}' type='chat' id='d1'><body>x</body></message>")
    e = expect(a, r"<message[^>]*id='d1'.*?</message>", timeout=15)
    assert "type='error'" in e, e
    # ... and b does not even try to reach a.
    b.send("<message to='alice@a.test' type='chat' id='d2'><body>x</body></message>")
    e = expect(b, r"<message[^>]*id='d2'.*?</message>")
    assert "type='error'" in e and "remote-server-not-found" in e, e
    assert "a.test" not in connections(p.b)
    a.close()
    b.close()


def test_bad_s2s_hosts_is_a_config_error(tmp_path):
    from conftest import build_dir
    from xmpptest import Server
    srv = Server(build_dir(), tmp_path / "bad", extra_yaml="s2s_hosts:\n  x.test: \"1.2.3.4:0\"\n")
    r = subprocess.run([srv.bin, "--config", srv.config_path, "--check-config"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and re.search(r"xmppd\.yml:\d+:\d+: s2s_hosts\.x\.test", r.stderr), \
        r.stderr


def test_raw_incoming_stream_rules(server_factory):
    """An incoming stream may not send stanzas for pairs it did not
    authenticate, nor dialback before TLS when encryption is required."""
    p = make_pair(server_factory, start_b=False)
    s = socket.create_connection((A_IP, int(re.search(r"port: (\d+)\n    ip: 127.0.0.1\n    module: s2s",
                                                      open(p.a.config_path).read()).group(1))))
    s.settimeout(5)
    s.sendall(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
              b"xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' "
              b"from='evil.test' to='a.test' version='1.0'>")
    buf = b""
    while b"</stream:features>" not in buf:
        buf += s.recv(4096)
    assert b"<starttls" in buf and b"<required/>" in buf, buf
    s.sendall(b"<db:result from='evil.test' to='a.test'>abc</db:result>")
    while b"</stream:stream>" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    assert b"policy-violation" in buf, buf
    s.close()



def test_raw_incoming_sasl_authzid_encoding(server_factory):
    """XEP-0178 on an incoming stream: an authzid that is not strict base64
    (RFC 4648 4, no white space: RFC 6120 6.4.2) is <incorrect-encoding/>;
    one that decodes to a name with a NUL in it is no domain."""
    p = make_pair(server_factory, start_b=False)
    port = int(re.search(r"port: (\d+)\n    ip: 127.0.0.1\n    module: s2s",
                         open(p.a.config_path).read()).group(1))
    raw = socket.create_connection((A_IP, port), timeout=10)
    header = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
              b"xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' "
              b"from='b.test' to='a.test' version='1.0'>")

    tls, _ = incoming_over_tls(raw, header, "a.test")
    for text, cond in ((b"!!!notbase64", b"incorrect-encoding"),
                       (b" Yi50ZXN0", b"incorrect-encoding"),      # " b.test"
                       (b"Yi50ZXN0\n", b"incorrect-encoding"),
                       (b"Yh==", b"incorrect-encoding"),           # "b", spare bits set
                       (b"Yi50ZXN0AGEudGVzdA==", b"not-authorized")):  # "b.test\0a.test"
        tls.sendall(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>"
                    + text + b"</auth>")
        buf = read_until(tls, rb"</failure>")
        assert cond in buf, (text, buf)
    tls.close()

# ---- DNS, direct TLS (XEP-0368), idle streams ----

def test_direct_tls_found_through_xmpps_srv(server_factory, tmp_path):
    """b.test publishes only _xmpps-server._tcp (direct TLS) in a real DNS
    server; a.test resolves it and connects with TLS from the first byte."""
    from prosody import DnsServer, Unavailable
    dns = DnsServer(str(tmp_path / "dns"))
    b_c2s, b_tls = free_port(addr=B_IP), free_port(addr=B_IP)
    dns.add_srv("b.test", b_tls, target="s2s.b.test", service="xmpps-server")
    dns.add_srv("b.test", None)  # "." for _xmpp-server: no STARTTLS service
    dns.add_host("s2s.b.test", B_IP)
    try:
        dns.start()
    except Unavailable as e:
        pytest.skip(str(e))
    try:
        a_c2s, a_s2s = free_port(addr=A_IP), free_port(addr=A_IP)
        a = server_factory(hosts=("a.test",), listen=listen_yaml(A_IP, a_c2s, a_s2s),
                           extra_yaml=f"s2s_dns_servers: \"{dns.nameserver}\"\n"
                                      f"s2s_hosts:\n  a.test: \"{A_IP}:{a_s2s}\"\n")
        b = server_factory(hosts=("b.test",),
                           listen=(f"  - port: {b_c2s}\n    ip: {B_IP}\n    module: c2s\n"
                                   f"  - port: {b_tls}\n    ip: {B_IP}\n    module: s2s\n"
                                   f"    tls: true\n"),
                           extra_yaml=f"s2s_hosts:\n  a.test: \"{A_IP}:{a_s2s}\"\n")
        for srv, c2s, ip, dom in ((a, a_c2s, A_IP, "a.test"), (b, b_c2s, B_IP, "b.test")):
            srv.c2s_port, srv.ip, srv.domain = c2s, ip, dom
            users(srv, "u")
        ca, _ = online(a, "u", "r")
        cb, bjid = online(b, "u", "r")
        ca.send(f"<message to='{bjid}' type='chat'><body>direct</body></message>")
        expect(cb, r"<message[^>]*>.*?direct.*?</message>")
        log = a.log_text()
        assert re.search(r"s2s connected.*to=127\.0\.0\.2:%d.*tls=direct" % b_tls, log), log
        assert "_xmpps-server._tcp.b.test" in dns.log_text()
        ca.close()
        cb.close()
    finally:
        dns.stop()


def test_idle_streams_close_and_reopen(server_factory):
    p = make_pair(server_factory, a_extra="s2s_timeout: 1s\n", b_extra="s2s_timeout: 1s\n")
    a, _ = online(p.a, "alice", "r")
    b, bjid = online(p.b, "bob", "r")
    a.send(f"<message to='{bjid}' type='chat'><body>one</body></message>")
    expect(b, r"<message[^>]*>.*?one.*?</message>")
    assert "b.test" in connections(p.a)
    # Time itself is under test here (s2s_timeout): poll until the idle
    # streams are gone.
    deadline = time.time() + 10
    while "b.test" in connections(p.a):
        assert time.time() < deadline, "idle s2s streams were not closed"
        time.sleep(0.1)
    a.send(f"<message to='{bjid}' type='chat'><body>two</body></message>")
    expect(b, r"<message[^>]*>.*?two.*?</message>")
    a.close()
    b.close()


def test_incoming_stream_multiplexes_two_domains(server_factory):
    """One incoming stream authenticates two of the sending server's domains
    with dialback (XEP-0220: several <db:result/> on one stream), then
    carries stanzas for both; a third, unauthenticated domain is refused.
    The sending side is played by hand, with keys made from a.test's node
    secret (its dialback key: HKDF-Expand-SHA256 with info "xmppd node key:
    dialback"), so b.test really dials back to the authoritative server."""
    a_c2s, a_s2s = free_port(addr=A_IP), free_port(addr=A_IP)
    b_c2s, b_s2s = free_port(addr=B_IP), free_port(addr=B_IP)
    a = server_factory(hosts=("a.test", "a2.test"), listen=listen_yaml(A_IP, a_c2s, a_s2s),
                       extra_yaml=f"s2s_hosts:\n  b.test: \"{B_IP}:{b_s2s}\"\n")
    b = server_factory(hosts=("b.test",), listen=listen_yaml(B_IP, b_c2s, b_s2s),
                       extra_yaml=(f"s2s_hosts:\n  a.test: \"{A_IP}:{a_s2s}\"\n"
                                   f"  a2.test: \"{A_IP}:{a_s2s}\"\n"))
    b.c2s_port, b.ip, b.domain = b_c2s, B_IP, "b.test"
    users(b, "bob")
    bob, _ = online(b, "bob", "r")
    tls, features = dialback_in(a, B_IP, b_s2s, ["a.test", "a2.test"])
    assert b"urn:xmpp:features:dialback" in features, features
    for i, dom in enumerate(("a.test", "a2.test")):
        tls.sendall(f"<message from='x@{dom}/r' to='bob@b.test' type='chat'>"
                    f"<body>via {dom}</body></message>".encode())
        expect(bob, r"<message[^>]*>.*?via %s.*?</message>" % re.escape(dom))
    assert "auth=dialback" in connections(b)
    # a.test answered the verifications as the authoritative server.
    log = a.log_text()
    for dom in ("a.test", "a2.test"):
        assert re.search(r"db:verify answered.* for=%s by=b\.test valid=yes" % re.escape(dom),
                         log), log
    # A domain this stream did not authenticate.
    tls.sendall(b"<message from='x@evil.test' to='bob@b.test'><body>no</body></message>")
    assert b"invalid-from" in read_until(tls, rb"</stream:error>")
    tls.close()
    bob.close()


def dialback_in(a, b_ip, b_s2s, doms, receiving="b.test"):
    """Plays a's side of an incoming stream to b by hand: TLS, then a
    dialback request per domain of doms with keys made from a's node secret
    (its dialback key: HKDF-Expand-SHA256 with info "xmppd node key:
    dialback"), so b dials back to a, the authoritative server.  Returns
    the TLS socket once every domain is valid, and the stream features."""
    import hashlib
    import hmac
    with open(os.path.join(a.data_dir, "secret"), "rb") as f:
        secret = f.read()
    db_key = hmac.new(secret, b"xmppd node key: dialback\x01", hashlib.sha256).digest()

    def key(originating, sid):
        k = hashlib.sha256(db_key).hexdigest().encode()
        return hmac.new(k, f"{receiving} {originating} {sid}".encode(),
                        hashlib.sha256).hexdigest()

    raw = socket.create_connection((b_ip, b_s2s), timeout=10)
    header = ("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
              "xmlns:db='jabber:server:dialback' "
              "xmlns:stream='http://etherx.jabber.org/streams' "
              f"from='{doms[0]}' to='{receiving}' version='1.0'>").encode()
    tls, features = incoming_over_tls(raw, header, receiving)
    sid = re.search(rb"<stream:stream[^>]*\sid=['\"]([^'\"]+)", features).group(1).decode()
    for dom in doms:
        tls.sendall(f"<db:result from='{dom}' to='{receiving}'>{key(dom, sid)}"
                    f"</db:result>".encode())
    buf = b""
    for dom in doms:
        buf = read_until(tls, (r"<db:result[^>]*type=['\"]valid['\"][^>]*to=['\"]%s['\"]|"
                               r"<db:result[^>]*to=['\"]%s['\"][^>]*type=['\"]valid"
                               % (re.escape(dom), re.escape(dom))).encode(), buf)
    return tls, features


def test_incoming_stream_keeps_order_across_deferred_work(server_factory):
    """RFC 6120 10.1 on an incoming server stream: a subscription request
    is handled on the pool (the roster is written first), and the message
    its sender sent right after it on the same stream must not overtake it:
    the stream is held meanwhile (xmppd/input.h)."""
    p = make_pair(server_factory, b_extra="modules:\n  mod_roster: {}\n  mod_ping: {}\n")
    a, b = p.a, p.b
    bob, bjid = online(b, "bob", "r", roster=True)
    n = 10
    # bob asks each contact for its presence: ask=subscribe in his roster.
    for i in range(n):
        bob.send(f"<presence to='x{i}@a.test' type='subscribe'/>")
    for i in range(n):
        expect(bob, r"<iq[^>]*type=['\"]set['\"].*?x%d@a\.test.*?</iq>" % i)
    tls, _ = dialback_in(a, B_IP, b.s2s_port, ["a.test"])
    # Each approves, and its available presence follows (RFC 6121 3.1.5).
    tls.sendall("".join(f"<presence from='x{i}@a.test' to='bob@b.test' type='subscribed'/>"
                        f"<presence from='x{i}@a.test/r' to='bob@b.test'/>"
                        for i in range(n)).encode())
    ahead, m = bob.before(r"<presence[^>]*from=['\"]x%d@a\.test/r['\"][^>]*>" % (n - 1),
                          timeout=10)
    got = helpers.q(ahead + m.group(0))
    order = []
    for t in re.finditer(r"<presence[^>]*from='(x\d)@a\.test(/r)?'[^>]*>", got):
        order.append(("A:" if t.group(2) else "S:") + t.group(1))
    assert order == [f"{k}:x{i}" for i in range(n) for k in ("S", "A")], got
    tls.close()
    bob.close()


@pytest.mark.parametrize("multiplex", [True, False])
def test_outgoing_stream_carries_two_local_domains(server_factory, multiplex):
    """a.test and a2.test on one server send to b.test: with s2s_multiplex
    the second domain joins the established stream with its own dialback
    request; without, it gets a stream of its own."""
    a_c2s, a_s2s = free_port(addr=A_IP), free_port(addr=A_IP)
    b_c2s, b_s2s = free_port(addr=B_IP), free_port(addr=B_IP)
    a = server_factory(hosts=("a.test", "a2.test"), listen=listen_yaml(A_IP, a_c2s, a_s2s),
                       extra_yaml=(f"s2s_hosts:\n  b.test: \"{B_IP}:{b_s2s}\"\n"
                                   f"s2s_multiplex: {'true' if multiplex else 'false'}\n"))
    b = server_factory(hosts=("b.test",), listen=listen_yaml(B_IP, b_c2s, b_s2s),
                       extra_yaml=(f"s2s_hosts:\n  a.test: \"{A_IP}:{a_s2s}\"\n"
                                   f"  a2.test: \"{A_IP}:{a_s2s}\"\n"))
    a.c2s_port, a.ip = a_c2s, A_IP
    b.c2s_port, b.ip, b.domain = b_c2s, B_IP, "b.test"
    for dom in ("a.test", "a2.test"):
        users(a, "u", host=dom)
    users(b, "bob")
    bob, bjid = online(b, "bob", "r")
    for dom in ("a.test", "a2.test"):
        a.domain = dom
        c, _ = online(a, "u", "r")
        c.send(f"<message to='{bjid}' type='chat'><body>from {dom}</body></message>")
        expect(bob, r"<message[^>]*>.*?from %s.*?</message>" % re.escape(dom))
        c.close()
    out = [l for l in connections(a).splitlines() if l.startswith("out ")]
    conns = {re.search(r"conn=(\d+)", l).group(1) for l in out}
    assert len(out) == 2, out
    if multiplex:
        assert len(conns) == 1 and any("a2.test -> b.test auth=dialback-mux" in l
                                       for l in out), out
    else:
        assert len(conns) == 2 and not any("mux" in l for l in out), out
    # b saw both pairs authenticated on its incoming side.
    inc = connections(b)
    assert "b.test <- a.test" in inc and "b.test <- a2.test" in inc, inc
    bob.close()


def test_unanswered_multiplexing_falls_back_to_a_stream(server_factory):
    """The remote server (played by hand, without TLS) answers the first
    domain's dialback request and ignores the second one sent on the same
    stream: after s2s_connect_timeout the second domain opens a stream of
    its own, and its messages go there."""
    lsock = socket.socket()
    lsock.bind((B_IP, 0))
    lsock.listen(4)
    port = lsock.getsockname()[1]
    a_c2s, a_s2s = free_port(addr=A_IP), free_port(addr=A_IP)
    a = server_factory(hosts=("a.test", "a2.test"), listen=listen_yaml(A_IP, a_c2s, a_s2s),
                       extra_yaml=(f"s2s_hosts:\n  b.test: \"{B_IP}:{port}\"\n"
                                   "s2s_require_encryption: false\ns2s_connect_timeout: 2s\n"))
    a.c2s_port, a.ip = a_c2s, A_IP

    def accept_stream():
        lsock.settimeout(10)
        s, _ = lsock.accept()
        s.settimeout(10)
        buf = b""
        while b"<stream:stream" not in buf or b">" not in buf.split(b"<stream:stream", 1)[1]:
            buf += s.recv(4096)
        s.sendall(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                  b"xmlns:db='jabber:server:dialback' "
                  b"xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='b.test' "
                  b"version='1.0'><stream:features><dialback xmlns='urn:xmpp:features:dialback'/>"
                  b"</stream:features>")
        return s

    try:
        for dom in ("a.test", "a2.test"):
            users(a, "u", host=dom)
        a.domain = "a.test"
        c1, _ = online(a, "u", "r")
        c1.send("<message to='bob@b.test' type='chat'><body>first</body></message>")
        s1 = accept_stream()
        read_until(s1, rb"<db:result[^>]*from=['\"]a\.test['\"]")
        s1.sendall(b"<db:result from='b.test' to='a.test' type='valid'/>")
        buf1 = read_until(s1, rb"<body>first</body>")
        # The second domain joins the stream; its request is never answered.
        a.domain = "a2.test"
        c2, _ = online(a, "u", "r")
        c2.send("<message to='bob@b.test' type='chat'><body>second</body></message>")
        read_until(s1, rb"<db:result[^>]*from=['\"]a2\.test['\"]", buf1)
        s2 = accept_stream()  # the fallback stream, after the timeout
        read_until(s2, rb"<db:result[^>]*from=['\"]a2\.test['\"]")
        s2.sendall(b"<db:result from='b.test' to='a2.test' type='valid'/>")
        read_until(s2, rb"<body>second</body>")
        assert "s2s multiplexing unanswered" in a.log_text()
        for s in (s1, s2):
            s.close()
        c1.close()
        c2.close()
    finally:
        lsock.close()


# ---- addresses on an incoming stream (RFC 7622, RFC 6120 4.9.3.7, 8.3.3.8) ----

def raw_peer_into_b(server_factory):
    """a.test and b.test (alice on a, bob on b, both online) and a stream
    from a.test into b.test played by hand: dialback with keys made from
    a.test's node secret (as in test_incoming_stream_multiplexes_two_domains),
    so b.test's verification reaches the real a.test.  Returns (a, b, tls,
    alice, ajid, bob, bjid)."""
    import hashlib
    import hmac
    a_c2s, a_s2s = free_port(addr=A_IP), free_port(addr=A_IP)
    b_c2s, b_s2s = free_port(addr=B_IP), free_port(addr=B_IP)
    a = server_factory(hosts=("a.test",), listen=listen_yaml(A_IP, a_c2s, a_s2s),
                       extra_yaml=f"s2s_hosts:\n  b.test: \"{B_IP}:{b_s2s}\"\n")
    b = server_factory(hosts=("b.test",), listen=listen_yaml(B_IP, b_c2s, b_s2s),
                       extra_yaml=f"s2s_hosts:\n  a.test: \"{A_IP}:{a_s2s}\"\n")
    a.c2s_port, a.ip, a.domain = a_c2s, A_IP, "a.test"
    b.c2s_port, b.ip, b.domain = b_c2s, B_IP, "b.test"
    users(a, "alice")
    users(b, "bob")
    alice, ajid = online(a, "alice", "r")
    bob, bjid = online(b, "bob", "r")
    with open(os.path.join(a.data_dir, "secret"), "rb") as f:
        secret = f.read()
    db_key = hmac.new(secret, b"xmppd node key: dialback\x01", hashlib.sha256).digest()
    raw = socket.create_connection((B_IP, b_s2s), timeout=10)
    header = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
              b"xmlns:db='jabber:server:dialback' "
              b"xmlns:stream='http://etherx.jabber.org/streams' "
              b"from='a.test' to='b.test' version='1.0'>")
    tls, buf = incoming_over_tls(raw, header, "b.test")
    sid = re.search(rb"<stream:stream[^>]*\sid=['\"]([^'\"]+)", buf).group(1).decode()
    k = hashlib.sha256(db_key).hexdigest().encode()
    key = hmac.new(k, f"b.test a.test {sid}".encode(), hashlib.sha256).hexdigest()
    tls.sendall(f"<db:result from='a.test' to='b.test'>{key}</db:result>".encode())
    read_until(tls, rb"<db:result[^>]*type=['\"]valid")
    return a, b, tls, alice, ajid, bob, bjid


def test_relayed_addresses_arrive_canonical(server_factory):
    """What a peer relays reaches the recipient in canonical form (RFC 7622:
    localpart and domain case-folded, the domain's trailing dot gone, the
    resource kept as it is); a 'to' that is not a JID is answered with
    jid-malformed from b.test, not from itself; a 'from' that is not a JID
    is improper-addressing (RFC 6120 4.9.3.7)."""
    a, b, tls, alice, ajid, bob, bjid = raw_peer_into_b(server_factory)
    tls.sendall(b"<message from='X@A.TEST/Res' to='BOB@B.TEST./r' type='chat' id='c1'>"
                b"<body>one</body></message>")
    m = expect(bob, helpers.msg_rx("c1"))
    assert "from='x@a.test/Res'" in m and f"to='{bjid}'" in m, m
    tls.sendall(b"<message from='x@a.test.' to='bob@b.test/r' type='chat' id='c2'>"
                b"<body>two</body></message>")
    m = expect(bob, helpers.msg_rx("c2"))
    assert "from='x@a.test'" in m and "a.test." not in m, m
    # A malformed 'to': the error goes back to the sender at a.test.
    tls.sendall(f"<message from='{ajid}' to='bob@@b.test' type='chat' id='c3'>"
                f"<body>three</body></message>".encode())
    e = expect(alice, helpers.msg_rx("c3"))
    assert "type='error'" in e and "jid-malformed" in e, e
    assert "from='b.test'" in e and "bob@@" not in e, e
    tls.sendall(b"<message from='x@@a.test' to='bob@b.test'><body>no</body></message>")
    assert b"improper-addressing" in read_until(tls, rb"</stream:error>")
    tls.close()
    alice.close()
    bob.close()


def test_xml_1_1_declaration_refused_on_s2s(server_factory):
    """RFC 6120 11.8: XMPP is XML 1.0; a stream declared 1.1 is bad-format."""
    p = make_pair(server_factory, start_b=False)
    port = int(re.search(r"port: (\d+)\n    ip: 127.0.0.1\n    module: s2s",
                         open(p.a.config_path).read()).group(1))
    s = socket.create_connection((A_IP, port), timeout=10)
    s.sendall(b"<?xml version='1.1'?><stream:stream xmlns='jabber:server' "
              b"xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' "
              b"from='b.test' to='a.test' version='1.0'>")
    buf = read_until(s, rb"</stream:error>")
    assert b"<bad-format" in buf and b"<stream:features" not in buf, buf
    s.close()


@pytest.mark.slow
def test_incoming_flood_to_an_offline_user_stays_bounded(server_factory, monkeypatch):
    """40,000 messages pipelined over one incoming server stream to an
    offline user: the stream is held while each is stored (xmppd/input.h),
    so b's memory stays bounded; the default quota keeps 1,000 (the rest
    bounce to a.test, which drops errors for a user it does not have).
    A small ASan quarantine, as test_durability's flood test explains."""
    asan = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (asan + ":" if asan else "") + "quarantine_size_mb=16")
    p = make_pair(server_factory, b_extra="modules:\n  mod_offline: {}\n  mod_ping: {}\n")
    a, b = p.a, p.b
    tls, _ = dialback_in(a, B_IP, b.s2s_port, ["a.test"])
    base = peak = b.rss_kib()
    chunk = "".join(f"<message from='x@a.test/r' to='bob@b.test' type='chat'>"
                    f"<body>flood {i}</body></message>" for i in range(1000)).encode()
    for _ in range(40):
        tls.sendall(chunk)
        peak = max(peak, b.rss_kib())
    # A barrier on the same stream: a message to carol, stored after every
    # message before it was stored (or refused).
    tls.sendall(b"<message from='x@a.test/r' to='carol@b.test' type='chat'>"
                b"<body>last</body></message>")
    carol, _ = online(b, "carol", "r", presence=False)
    carol.send("<presence/>")
    deadline = time.time() + 120
    while True:  # stored only once the flood is through: log in again until it is there
        try:
            carol.recv_until(rb"<body>last</body>", timeout=2)
            break
        except AssertionError:
            assert time.time() < deadline, "the barrier was never stored"
            peak = max(peak, b.rss_kib())
            carol.close()
            carol, _ = online(b, "carol", "r", presence=False)
            carol.send("<presence/>")
    peak = max(peak, b.rss_kib())
    assert peak - base < 100 * 1024, (base, peak)
    bob, _ = online(b, "bob", "r")
    got = re.findall(rb"<body>flood (\d+)</body>", bob.roundtrip())
    assert [int(x) for x in got] == list(range(1000)), got[:5]
    tls.close()
    bob.close()

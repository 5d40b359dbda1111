"""Federation with Prosody (the Debian package) on loopback: xmppd.test on
127.0.0.1 and prosody.test on 127.0.0.2.  Both find each other through SRV
records of a private dnsmasq (xmppd with s2s_dns_servers, Prosody through
lua-unbound): dialback with self-signed certificates, and SASL EXTERNAL
both ways with certificates from a test CA.  Skipped, with the reason, where
Prosody or lua-unbound is not installed (XMPPD_REQUIRE_PROSODY=1 makes that
a failure)."""
import re

import pytest

from helpers import online, subscribe_in_order, users
from prosody import prosody_lab  # noqa: F401  (the fixture)
from xmpptest import free_port

X_IP, P_IP = "127.0.0.1", "127.0.0.2"
pytestmark = pytest.mark.slow


def start_xmppd(server_factory, lab, verify, certs=None):
    c2s, s2s = free_port(addr=X_IP), free_port(addr=X_IP)
    lab.add_peer("xmppd.test", X_IP, s2s)  # SRV for Prosody
    extra = (f"s2s_dns_servers: \"{lab.dns.nameserver}\"\n"
             f"s2s_connect_timeout: 8s\n"
             f"s2s_verify_certificates: {'true' if verify else 'false'}\n"
             f"ca_file: {lab.ca.cert}\n")
    if certs:
        extra += f"certfiles:\n  - {certs.cert}\n  - {certs.key}\n"
    srv = server_factory(hosts=("xmppd.test",),
                         listen=(f"  - port: {c2s}\n    ip: {X_IP}\n    module: c2s\n"
                                 f"  - port: {s2s}\n    ip: {X_IP}\n    module: s2s\n"),
                         extra_yaml=extra)
    srv.c2s_port = c2s
    users(srv, "alice", host="xmppd.test")
    return srv


def chat(xmppd, prosody):
    prosody.register("bob", "pw")
    a, ajid = online(xmppd, "alice", "x", host=X_IP, domain="xmppd.test")
    b, bjid = online(prosody, "bob", "p", mech="SCRAM-SHA-1")
    a.send(f"<message to='{bjid}' type='chat'><body>to prosody</body></message>")
    m = b.recv_until(r"<message[^>]*>.*?to prosody.*?</message>", timeout=15).group(0).decode()
    assert ajid in m, m
    b.send(f"<message to='{ajid}' type='chat'><body>to xmppd</body></message>")
    m = a.recv_until(r"<message[^>]*>.*?to xmppd.*?</message>", timeout=15).group(0).decode()
    assert bjid in m, m
    subscribe_in_order(a, ajid, b, bjid)
    a.close()
    b.close()
    r = xmppd.ctl_run("s2s_connections")
    return r.stdout


def test_prosody_dialback(server_factory, prosody_lab):
    lab = prosody_lab
    x = start_xmppd(server_factory, lab, verify=False)
    p = lab.start(domain="prosody.test", ip=P_IP, cert="self-signed", s2s_secure_auth=False)
    conns = chat(x, p)
    assert re.search(r"out xmppd\.test -> prosody\.test auth=dialback", conns), conns
    assert re.search(r"in xmppd\.test <- prosody\.test auth=dialback", conns), conns


def test_prosody_sasl_external(server_factory, prosody_lab):
    lab = prosody_lab
    x = start_xmppd(server_factory, lab, verify=True, certs=lab.ca.issue("xmppd.test"))
    p = lab.start(domain="prosody.test", ip=P_IP, cert="ca", s2s_secure_auth=True,
                  dialback=False)
    conns = chat(x, p)
    assert re.search(r"out xmppd\.test -> prosody\.test auth=sasl", conns), conns
    assert re.search(r"in xmppd\.test <- prosody\.test auth=(sasl|dialback-cert)", conns), conns


def test_prosody_two_xmppd_domains_one_stream(server_factory, prosody_lab):
    """xmppd.test and xmppd2.test send to Prosody: the second domain joins
    the first one's stream with its own dialback request (Prosody accepts
    several domain pairs on one incoming stream)."""
    lab = prosody_lab
    c2s, s2s = free_port(addr=X_IP), free_port(addr=X_IP)
    for dom in ("xmppd.test", "xmppd2.test"):
        lab.add_peer(dom, X_IP, s2s)
    x = server_factory(hosts=("xmppd.test", "xmppd2.test"),
                       listen=(f"  - port: {c2s}\n    ip: {X_IP}\n    module: c2s\n"
                               f"  - port: {s2s}\n    ip: {X_IP}\n    module: s2s\n"),
                       extra_yaml=f"s2s_dns_servers: \"{lab.dns.nameserver}\"\n"
                                  f"s2s_connect_timeout: 8s\nca_file: {lab.ca.cert}\n")
    x.c2s_port = c2s
    p = lab.start(domain="prosody.test", ip=P_IP, cert="self-signed", s2s_secure_auth=False)
    p.register("bob", "pw")
    b, bjid = online(p, "bob", "p", mech="SCRAM-SHA-1")
    for dom in ("xmppd.test", "xmppd2.test"):
        users(x, "u", host=dom)
        a, _ = online(x, "u", "x", presence=False, host=X_IP, domain=dom)
        a.send(f"<message to='{bjid}' type='chat'><body>from {dom}</body></message>")
        b.recv_until(r"<message[^>]*>.*?from %s.*?</message>" % re.escape(dom), timeout=15)
        a.close()
    b.close()
    out = [l for l in x.ctl_run("s2s_connections").stdout.splitlines() if l.startswith("out ")]
    assert len(out) == 2, out
    assert len({re.search(r"conn=(\d+)", l).group(1) for l in out}) == 1, out

"""Self-test of the Prosody fixture (tests/integration/prosody.py): two
Prosody instances federating with each other through the test DNS server,
so that the fixture is known to work before xmppd's s2s uses it.

  a.test on 127.0.0.1 and b.test on 127.0.0.2, each on random ports, found
  only through SRV records served by the fixture's dnsmasq;
  - test CA + s2s_secure_auth, dialback off: SASL EXTERNAL both ways;
  - self-signed certificates + dialback: dialback both ways;
  - self-signed certificates + s2s_secure_auth: the message bounces;
and the pieces alone: the certificates (SAN dNSName + xmppAddr, chain),
dnsmasq's answers, and the clean skip when Prosody is missing.

None of this runs xmppd, so the module is marked slow (not repeated in the
TSan pass)."""
import re
import subprocess

import pytest
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

import prosody
from helpers import assert_nothing_before, online
from prosody import DnsServer, dns_query, prosody_lab  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

XMPPADDR = ObjectIdentifier(prosody.XMPPADDR_OID)
SRV, A = 33, 1


def pair(lab, cert, **kw):
    """a.test (127.0.0.1) and b.test (127.0.0.2), alice and bob online."""
    a = lab.create("a.test", "127.0.0.1", cert=cert, **kw)
    b = lab.create("b.test", "127.0.0.2", cert=cert, **kw)
    a.start()
    b.start()
    a.register("alice", "pw-a")
    b.register("bob", "pw-b")
    # Prosody 0.12 with internal_hashed storage offers PLAIN and SCRAM-SHA-1.
    ca, ajid = online(a, "alice", "ra", password="pw-a", mech="SCRAM-SHA-1")
    cb, bjid = online(b, "bob", "rb", password="pw-b", mech="SCRAM-SHA-1")
    assert (ajid, bjid) == ("alice@a.test/ra", "bob@b.test/rb")
    return a, b, ca, cb


def message(c, mid, timeout=20):
    """The next <message/> with id `mid` (as text, quotes normalised)."""
    m = c.take(r"<message[^>]*id=['\"]" + mid + r"['\"].*?</message>", timeout=timeout)
    return m.group(0).decode().replace('"', "'")


def exchange(ca, cb):
    """alice -> bob and bob -> alice across the two servers."""
    ca.send("<message to='bob@b.test' type='chat' id='ab1'><body>hello b</body></message>")
    got = message(cb, "ab1")
    assert "from='alice@a.test/ra'" in got, got
    assert "<body>hello b</body>" in got, got
    cb.send("<message to='alice@a.test/ra' type='chat' id='ba1'><body>hello a</body></message>")
    got = message(ca, "ba1")
    assert "from='bob@b.test/rb'" in got, got
    assert "<body>hello a</body>" in got, got


def assert_found_by_srv(lab, a, b):
    queries = lab.dns.queries()
    for p in (a, b):
        assert p.s2s_port != 5269  # only the SRV record names this port
        assert ("SRV", f"_xmpp-server._tcp.{p.domain}") in queries, queries
        assert ("A", p.domain) in queries, queries


# ---- federation --------------------------------------------------------------

def test_federation_test_ca_sasl_external(prosody_lab):
    a, b, ca, cb = pair(prosody_lab, "ca", s2s_secure_auth=True, dialback=False)
    exchange(ca, cb)
    assert_found_by_srv(prosody_lab, a, b)
    # Certificates verified against the test CA, so SASL EXTERNAL, both ways.
    for me, peer in ((a, b), (b, a)):
        log = me.log_text()
        assert f"Accepting SASL EXTERNAL identity from {peer.domain}" in log
        assert "certificate chain validation result: valid" in log
        assert "certificate chain validation result: invalid" not in log
        assert "dialback" not in log


def test_federation_self_signed_dialback(prosody_lab):
    a, b, ca, cb = pair(prosody_lab, "self-signed", s2s_secure_auth=False, dialback=True)
    exchange(ca, cb)
    assert_found_by_srv(prosody_lab, a, b)
    for me, peer in ((a, b), (b, a)):
        log = me.log_text()
        # Each side asked the other's authoritative server to check a key
        # (<db:verify/>) and was told its own key was valid (<db:result/>).
        assert re.search(r"<db:verify (?=[^>]*from='%s')(?=[^>]*to='%s')"
                         % (me.domain, peer.domain), log), me.domain
        assert re.search(r"Received\[s2sout_unauthed\]: <result (?=[^>]*from='%s')"
                         r"(?=[^>]*type='valid')" % peer.domain, log), me.domain
        assert "certificate chain validation result: invalid" in log
        assert "Accepting SASL EXTERNAL" not in log


def test_secure_auth_refuses_self_signed(prosody_lab):
    a, b, ca, cb = pair(prosody_lab, "self-signed", s2s_secure_auth=True, dialback=True)
    ca.send("<message to='bob@b.test' type='chat' id='x1'><body>no</body></message>")
    err = message(ca, "x1", timeout=30)
    assert "type='error'" in err, err
    assert "from='bob@b.test'" in err, err
    # a.test bounced x1, so it will not send it; had b.test taken it, Prosody
    # (one thread) would have written it to bob before it answers his ping.
    assert_nothing_before(cb, r"<body>no</body>")
    logs = a.log_text() + b.log_text()
    assert "certificate chain validation result: invalid" in logs
    assert "Your server's certificate is not trusted" in logs


# ---- the pieces ----------------------------------------------------------------

def sans(path):
    cert = x509.load_pem_x509_certificate(open(path, "rb").read())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = ext.get_values_for_type(x509.DNSName)
    addrs = [o.value for o in ext.get_values_for_type(x509.OtherName) if o.type_id == XMPPADDR]
    return cert, dns, addrs


def verify(cafile, cert):
    return subprocess.run(["openssl", "verify", "-CAfile", cafile, cert],
                          capture_output=True, text=True)


def test_certificates(prosody_lab):
    ca = prosody_lab.ca
    leaf = ca.issue("xmppd.test", names=["conference.xmppd.test"])
    cert, dns, addrs = sans(leaf.cert)
    assert dns == ["xmppd.test", "conference.xmppd.test"]
    # id-on-xmppAddr is a DER UTF8String (tag 0x0c, then length).
    assert addrs == [b"\x0c\x0axmppd.test", b"\x0c\x15conference.xmppd.test"]
    assert cert.issuer.rfc4514_string() == "CN=xmppd interop test CA"
    assert leaf.ca == ca.cert
    assert verify(ca.cert, leaf.cert).returncode == 0

    plain = ca.issue("other.test", xmpp_addr=False)
    assert sans(plain.cert)[1:] == (["other.test"], [])

    own = prosody.self_signed(prosody_lab.dir, "self.test")
    cert, dns, addrs = sans(own.cert)
    assert cert.issuer == cert.subject and dns == ["self.test"]
    assert verify(own.ca, own.cert).returncode == 0
    r = verify(ca.cert, own.cert)
    assert r.returncode != 0, r.stdout


def test_dns_server_records(tmp_path):
    dns = DnsServer(tmp_path / "dns")
    dns.add_xmpp_server("xmppd.test", "127.0.0.1", 5999)
    try:
        dns.start()
        rcode, n, data = dns_query(dns.ip, dns.port, "_xmpp-server._tcp.xmppd.test", SRV)
        assert (rcode, n) == (0, 1)
        assert (5999).to_bytes(2, "big") + b"\x05xmppd\x04test\x00" in data
        rcode, n, data = dns_query(dns.ip, dns.port, "xmppd.test", A)
        assert (rcode, n) == (0, 1) and bytes([127, 0, 0, 1]) in data
        assert dns_query(dns.ip, dns.port, "nothing.test", A)[:2] == (3, 0)  # NXDOMAIN
        # Records added later are served after restart(), on the same port.
        port = dns.port
        dns.add_srv("late.test", 6000, target="h.late.test")
        dns.restart()
        assert dns.port == port
        assert dns_query(dns.ip, dns.port, "_xmpp-server._tcp.late.test", SRV)[:2] == (0, 1)
        assert ("SRV", "_xmpp-server._tcp.late.test") in dns.queries()
    finally:
        dns.stop()
    assert dns.proc is None


def test_missing_prosody_skips(prosody_lab, monkeypatch):
    monkeypatch.setattr(prosody, "PROSODY", "/nonexistent/prosody")
    monkeypatch.delenv("XMPPD_REQUIRE_PROSODY", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"Debian package: prosody"):
        prosody_lab.start("a.test")
    monkeypatch.setenv("XMPPD_REQUIRE_PROSODY", "1")
    with pytest.raises(pytest.fail.Exception):
        prosody_lab.start("a.test")


def test_prosody_that_cannot_start_skips(prosody_lab, monkeypatch):
    monkeypatch.delenv("XMPPD_REQUIRE_PROSODY", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"(?s)prosody exited with \d+ at start.*"):
        prosody_lab.start("a.test", use_dns=False, extra_config="this is not Lua")
